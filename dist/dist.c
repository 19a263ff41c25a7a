/* dist/dist.c — ranks and host collectives through MPI (dist/dist.h). Built
 * with QLORA_HAVE_MPI when CMake found MPI; without it the world is one
 * process and every collective returns at once. */
#include "dist/dist.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifdef QLORA_HAVE_MPI
#include <mpi.h>
#endif

void qt_dist_ordered_sum(const float *recv, int world, int64_t m, float *out) {
  for (int64_t k = 0; k < m; k++) {
    double s = 0;
    for (int j = 0; j < world; j++) s += (double)recv[(size_t)j * (size_t)m + (size_t)k];
    out[k] = (float)s;
  }
}

/* The world is process state, as MPI_COMM_WORLD is (dist.h). */
static qt_dist qt_world = {.rank = 0, .world_size = 1, .local_rank = 0, .local_size = 1, .mpi = false};
#ifdef QLORA_HAVE_MPI
/* (world_size, 64) doubles for qt_dist_sum_f64, allocated once by qt_dist_init
 * so that the training step allocates nothing */
static double *qt_f64_scratch;
#endif

const qt_dist *qt_dist_world(void) { return &qt_world; }

/* The launchers' variables (shared/docs/reference/multi-gpu.md): Open MPI's
 * mpirun, MPICH's hydra (PMI), PMIx launchers (srun --mpi=pmix, prterun). */
/* 0: not started by a launcher; else the world size it announces (2 when it
 * names a rank but not the size). */
static int launcher_world_size(void) {
  static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"};
  for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
    const char *v = getenv(vars[i]);
    if (v && atoi(v) >= 1) return atoi(v);
  }
  if (getenv("PMIX_RANK") || getenv("PMI_RANK")) return 2;
  return 0;
}

#ifdef QLORA_HAVE_MPI

static qt_status mpi_fail(int err, const char *what) {
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(err, msg, &len) != MPI_SUCCESS) snprintf(msg, sizeof msg, "error %d", err);
  return qt_fail(QT_ERR_IO, "rank %d of %d: %s failed: %s", qt_world.rank, qt_world.world_size, what, msg);
}
#define MPI_TRY(call)                            \
  do {                                           \
    int mpi_e_ = (call);                         \
    if (mpi_e_ != MPI_SUCCESS) return mpi_fail(mpi_e_, #call); \
  } while (0)

qt_status qt_dist_init(int *argc, char ***argv) {
  if (launcher_world_size() == 0) return QT_OK; /* a plain single process: MPI untouched */
  int provided = 0;
  MPI_TRY(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided));
  qt_world.mpi = true;
  /* errors come back as codes, so that main() can name the rank and abort */
  MPI_TRY(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
  if (provided < MPI_THREAD_FUNNELED)
    return qt_fail(QT_ERR_UNSUPPORTED, "the MPI library gives thread level %d, qlora-train needs MPI_THREAD_FUNNELED "
                   "(OpenMP threads compute while the main thread calls MPI)", provided);
  MPI_TRY(MPI_Comm_rank(MPI_COMM_WORLD, &qt_world.rank));
  MPI_TRY(MPI_Comm_size(MPI_COMM_WORLD, &qt_world.world_size));
  /* node-local rank: the ranks that share memory with this one (MPI-3) */
  MPI_Comm node;
  MPI_TRY(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, qt_world.rank, MPI_INFO_NULL, &node));
  int lr = 0, ls = 1;
  int e1 = MPI_Comm_rank(node, &lr), e2 = MPI_Comm_size(node, &ls);
  MPI_Comm_free(&node);
  if (e1 != MPI_SUCCESS) return mpi_fail(e1, "MPI_Comm_rank(node)");
  if (e2 != MPI_SUCCESS) return mpi_fail(e2, "MPI_Comm_size(node)");
  qt_world.local_rank = lr;
  qt_world.local_size = ls;
  qt_f64_scratch = malloc((size_t)qt_world.world_size * 64 * sizeof *qt_f64_scratch);
  if (!qt_f64_scratch) return qt_fail(QT_ERR_NOMEM, "out of memory");
  return QT_OK;
}

void qt_dist_finalize(void) {
  if (qt_world.mpi) MPI_Finalize();
  qt_world.mpi = false;
  free(qt_f64_scratch);
  qt_f64_scratch = NULL;
}

void qt_dist_abort(int code) {
  if (qt_world.mpi && qt_world.world_size > 1) {
    fflush(stderr);
    fflush(stdout);
    MPI_Abort(MPI_COMM_WORLD, code);
  }
}

const char *qt_dist_backend(void) {
  static char name[128];
  char v[MPI_MAX_LIBRARY_VERSION_STRING];
  int len = 0;
  if (MPI_Get_library_version(v, &len) != MPI_SUCCESS) return "MPI";
  v[strcspn(v, ",\n")] = '\0';
  snprintf(name, sizeof name, "MPI (%s)", v);
  return name;
}

qt_status qt_dist_sum_i64(int64_t *v, int n) {
  QT_ASSERT(n >= 0 && n <= 64);
  if (qt_world.world_size == 1) return QT_OK;
  MPI_TRY(MPI_Allreduce(MPI_IN_PLACE, v, n, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD));
  return QT_OK;
}

qt_status qt_dist_max_i64(int64_t *v, int n) {
  QT_ASSERT(n >= 0 && n <= 64);
  if (qt_world.world_size == 1) return QT_OK;
  MPI_TRY(MPI_Allreduce(MPI_IN_PLACE, v, n, MPI_INT64_T, MPI_MAX, MPI_COMM_WORLD));
  return QT_OK;
}

qt_status qt_dist_sum_f64(double *v, int n) {
  QT_ASSERT(n >= 0 && n <= 64);
  if (qt_world.world_size == 1) return QT_OK;
  /* every rank gets every rank's values and adds them in rank order itself:
   * the same additions in the same order, so the same bits everywhere */
  double *all = qt_f64_scratch;
  MPI_TRY(MPI_Allgather(v, n, MPI_DOUBLE, all, n, MPI_DOUBLE, MPI_COMM_WORLD));
  for (int i = 0; i < n; i++) {
    double s = 0;
    for (int r = 0; r < qt_world.world_size; r++) s += all[(size_t)r * (size_t)n + (size_t)i];
    v[i] = s;
  }
  return QT_OK;
}

qt_status qt_dist_bcast(void *buf, size_t bytes, int root) {
  if (qt_world.world_size == 1) return QT_OK;
  QT_ASSERT(bytes <= (size_t)1 << 30);
  MPI_TRY(MPI_Bcast(buf, (int)bytes, MPI_BYTE, root, MPI_COMM_WORLD));
  return QT_OK;
}

qt_status qt_dist_gather_i64(const int64_t *v, int n, int64_t *all, int root) {
  QT_ASSERT(n >= 0 && n <= 64);
  if (qt_world.world_size == 1) {
    memcpy(all, v, (size_t)n * sizeof *v);
    return QT_OK;
  }
  MPI_TRY(MPI_Gather(v, n, MPI_INT64_T, all, n, MPI_INT64_T, root, MPI_COMM_WORLD));
  return QT_OK;
}

qt_status qt_dist_reducer_sum(qt_dist_reducer *r, float *buf) {
  int W = qt_world.world_size, me = qt_world.rank;
  if (W == 1) return QT_OK;
  int mine = r->counts[me];
  /* all-to-all: rank j gets slice j of every rank's buffer */
  int *rcounts = r->counts + W, *rdispls = r->displs + W;
  MPI_TRY(MPI_Alltoallv(buf, r->counts, r->displs, MPI_FLOAT, r->recv, rcounts, rdispls, MPI_FLOAT, MPI_COMM_WORLD));
  qt_dist_ordered_sum(r->recv, W, mine, buf + r->displs[me]);
  MPI_TRY(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, r->counts, r->displs, MPI_FLOAT, MPI_COMM_WORLD));
  return QT_OK;
}

#else /* no MPI: one process */

qt_status qt_dist_init(int *argc, char ***argv) {
  int n = launcher_world_size();
  if (n > 1)
    return qt_fail(QT_ERR_UNSUPPORTED, "started as one of %d ranks (by mpirun or srun), but this qlora-train was "
                   "built without MPI (QLORA_MPI=OFF or no MPI found): install libopenmpi-dev (tools/setup.sh) "
                   "and rebuild, or run it without a launcher", n);
  return QT_OK;
}
void qt_dist_finalize(void) {}
void qt_dist_abort(int code) { (void)code; }
const char *qt_dist_backend(void) { return "none (built without MPI)"; }
qt_status qt_dist_sum_i64(int64_t *v, int n) { return QT_OK; }
qt_status qt_dist_max_i64(int64_t *v, int n) { return QT_OK; }
qt_status qt_dist_sum_f64(double *v, int n) { return QT_OK; }
qt_status qt_dist_bcast(void *buf, size_t bytes, int root) { return QT_OK; }
qt_status qt_dist_gather_i64(const int64_t *v, int n, int64_t *all, int root) {
  memcpy(all, v, (size_t)n * sizeof *v);
  return QT_OK;
}
qt_status qt_dist_reducer_sum(qt_dist_reducer *r, float *buf) { return QT_OK; }

#endif

qt_status qt_dist_reducer_init(qt_dist_reducer *r, int64_t n) {
  memset(r, 0, sizeof *r);
  r->n = n;
  int W = qt_world.world_size, me = qt_world.rank;
  if (W == 1) return QT_OK;
  if (n > (int64_t)0x7fffffff)
    return qt_fail(QT_ERR_UNSUPPORTED, "%lld LoRA parameters: the gradient reduction addresses them with MPI's "
                   "int counts (at most 2^31 - 1)", (long long)n);
  /* counts/displs: [0, W) what this rank sends (slice j of its buffer), [W, 2W) what it receives */
  r->counts = calloc((size_t)W * 2, sizeof *r->counts);
  r->displs = calloc((size_t)W * 2, sizeof *r->displs);
  int64_t mine = (n * (me + 1)) / W - (n * me) / W;
  r->recv = malloc((size_t)(mine * W > 0 ? mine * W : 1) * sizeof *r->recv);
  if (!r->counts || !r->displs || !r->recv) {
    qt_dist_reducer_free(r);
    return qt_fail(QT_ERR_NOMEM, "out of memory (%lld floats of gradient reduction scratch)", (long long)(mine * W));
  }
  for (int j = 0; j < W; j++) {
    r->displs[j] = (int)((n * j) / W);
    r->counts[j] = (int)((n * (j + 1)) / W - (n * j) / W);
    r->counts[W + j] = (int)mine;
    r->displs[W + j] = (int)(mine * j);
  }
  return QT_OK;
}

void qt_dist_reducer_free(qt_dist_reducer *r) {
  free(r->recv);
  free(r->counts);
  free(r->displs);
  memset(r, 0, sizeof *r);
}

/* ---- watchdog ------------------------------------------------------------- */

static struct {
  pthread_t thread;
  bool running;
  double timeout_s;
  _Atomic long long last_ms; /* CLOCK_MONOTONIC of the last qt_dist_progress */
  _Atomic int stop;
} qt_wd;

static long long mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void *watchdog_main(void *arg) {
  (void)arg;
  long long tick = qt_wd.timeout_s < 10 ? 100 : 1000; /* ms between looks */
  while (!atomic_load(&qt_wd.stop)) {
    nanosleep(&(struct timespec){tick / 1000, (tick % 1000) * 1000000L}, NULL);
    double idle = (double)(mono_ms() - atomic_load(&qt_wd.last_ms)) / 1000.0;
    if (idle > qt_wd.timeout_s && !atomic_load(&qt_wd.stop)) {
      fprintf(stderr, "qlora-train (rank %d of %d): no training progress for %.0f s (QLORA_DIST_TIMEOUT_S=%g): a rank "
              "hangs, or this one waits for one that does; ending this rank so that the launcher stops the job\n",
              qt_world.rank, qt_world.world_size, idle, qt_wd.timeout_s);
      fflush(stderr);
      kill(getpid(), SIGKILL);
    }
  }
  return NULL;
}

qt_status qt_dist_watchdog_start(double timeout_s) {
  if (qt_world.world_size == 1 || timeout_s <= 0 || qt_wd.running) return QT_OK;
  qt_wd.timeout_s = timeout_s;
  atomic_store(&qt_wd.last_ms, mono_ms());
  atomic_store(&qt_wd.stop, 0);
  int e = pthread_create(&qt_wd.thread, NULL, watchdog_main, NULL);
  if (e != 0) return qt_fail(QT_ERR_NOMEM, "rank %d: cannot start the watchdog thread: %s", qt_world.rank, strerror(e));
  qt_wd.running = true;
  return QT_OK;
}

void qt_dist_progress(void) {
  if (qt_wd.running) atomic_store(&qt_wd.last_ms, mono_ms());
}

void qt_dist_watchdog_stop(void) {
  if (!qt_wd.running) return;
  atomic_store(&qt_wd.stop, 1);
  pthread_join(qt_wd.thread, NULL);
  qt_wd.running = false;
}
