/* dist/dist_cuda.cu — one GPU per rank and the NCCL gradient reduction
 * (dist/dist.h). NCCL setup after llm.c (train_gpt2.cu, multi_gpu_config_init):
 * rank 0 makes the ncclUniqueId, MPI_Bcast hands it over, ncclCommInitRank.
 *
 * libnccl.so.2 is opened at run time (dlopen), not linked: it is 200+ MiB,
 * absent from many machines that run qlora-train on one GPU or on CPUs, and
 * the GPU check bundle (tools/gpu_bundle.sh) cannot carry it. nccl.h, found
 * at build time, gives the types and signatures. */
#include <cuda_runtime_api.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cuda_check.h"
#include "dist/dist.h"

#ifdef QLORA_HAVE_NCCL
#include <nccl.h>
#endif

extern "C" qt_status qt_dist_cuda_select_device(void) {
  const qt_dist *w = qt_dist_world();
  int n = 0;
  QT_CUDA_CHECK(cudaGetDeviceCount(&n));
  if (w->local_rank >= n)
    return qt_fail(QT_ERR_CUDA, "rank %d is node-local rank %d of %d but this node has %d GPU(s): start at most one "
                   "rank per GPU (mpirun -np N with N GPUs per node)", w->rank, w->local_rank, w->local_size, n);
  QT_CUDA_CHECK(cudaSetDevice(w->local_rank));
  return QT_OK;
}

/* out[k] = sum over j in rank order of recv[j * m + k], in double, rounded once
 * (the same additions as qt_dist_reducer_sum on the host). */
__global__ void ordered_sum_kernel(const float *recv, int world, int64_t m, float *out) {
  int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (k >= m) return;
  double s = 0;
  for (int j = 0; j < world; j++) s += (double)recv[(int64_t)j * m + k];
  out[k] = (float)s;
}

extern "C" qt_status qt_dist_cuda_ordered_sum(const float *recv, int world, int64_t m, float *out) {
  if (m <= 0 || world <= 0) return QT_OK;
  float *d_recv = NULL, *d_out = NULL;
  qt_status r = QT_OK;
  size_t nin = (size_t)world * (size_t)m;
  QT_CUDA_CHECK_GOTO(r, done, cudaMalloc((void **)&d_recv, nin * sizeof(float)));
  QT_CUDA_CHECK_GOTO(r, done, cudaMalloc((void **)&d_out, (size_t)m * sizeof(float)));
  QT_CUDA_CHECK_GOTO(r, done, cudaMemcpy(d_recv, recv, nin * sizeof(float), cudaMemcpyHostToDevice));
  {
    int threads = 256;
    unsigned blocks = (unsigned)((m + threads - 1) / threads);
    ordered_sum_kernel<<<blocks, threads>>>(d_recv, world, m, d_out);
  }
  QT_CUDA_CHECK_LAUNCH_GOTO(r, done);
  QT_CUDA_CHECK_GOTO(r, done, cudaMemcpy(out, d_out, (size_t)m * sizeof(float), cudaMemcpyDeviceToHost));
done:
  cudaFree(d_recv);
  cudaFree(d_out);
  return r;
}

#ifdef QLORA_HAVE_NCCL

/* The NCCL functions used, from libnccl.so.2 (see above). */
static struct {
  bool tried, ok;
  char why[256];
  const char *(*GetErrorString)(ncclResult_t);
  ncclResult_t (*GetUniqueId)(ncclUniqueId *);
  ncclResult_t (*CommInitRank)(ncclComm_t *, int, ncclUniqueId, int);
  ncclResult_t (*CommDestroy)(ncclComm_t);
  ncclResult_t (*GroupStart)(void);
  ncclResult_t (*GroupEnd)(void);
  ncclResult_t (*Send)(const void *, size_t, ncclDataType_t, int, ncclComm_t, cudaStream_t);
  ncclResult_t (*Recv)(void *, size_t, ncclDataType_t, int, ncclComm_t, cudaStream_t);
  ncclResult_t (*Broadcast)(const void *, void *, size_t, ncclDataType_t, int, ncclComm_t, cudaStream_t);
} nccl;

static bool nccl_load(void) {
  if (nccl.tried) return nccl.ok;
  nccl.tried = true;
  void *h = dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    snprintf(nccl.why, sizeof nccl.why, "libnccl.so.2 not found (%s)", dlerror());
    return false;
  }
  struct { void **fn; const char *name; } syms[] = {
      {(void **)&nccl.GetErrorString, "ncclGetErrorString"}, {(void **)&nccl.GetUniqueId, "ncclGetUniqueId"},
      {(void **)&nccl.CommInitRank, "ncclCommInitRank"},     {(void **)&nccl.CommDestroy, "ncclCommDestroy"},
      {(void **)&nccl.GroupStart, "ncclGroupStart"},         {(void **)&nccl.GroupEnd, "ncclGroupEnd"},
      {(void **)&nccl.Send, "ncclSend"},                     {(void **)&nccl.Recv, "ncclRecv"},
      {(void **)&nccl.Broadcast, "ncclBroadcast"}};
  for (size_t i = 0; i < sizeof syms / sizeof syms[0]; i++) {
    *syms[i].fn = dlsym(h, syms[i].name);
    if (!*syms[i].fn) {
      snprintf(nccl.why, sizeof nccl.why, "libnccl.so.2 lacks %s (NCCL 2.7 or newer needed)", syms[i].name);
      dlclose(h);
      return false;
    }
  }
  nccl.ok = true;
  return true;
}

#define NCCL_TRY(call)                                                                            \
  do {                                                                                            \
    ncclResult_t nccl_e_ = (nccl.call);                                                           \
    if (nccl_e_ != ncclSuccess)                                                                   \
      return qt_fail(QT_ERR_CUDA, "rank %d: nccl%s failed: %s", qt_dist_world()->rank, #call,     \
                     nccl.GetErrorString(nccl_e_));                                               \
  } while (0)

struct qt_dist_nccl {
  ncclComm_t comm;
  bool comm_ok;
  cudaStream_t stream;
  int64_t n;
  float *d_buf;   /* (n) the step's gradients */
  float *d_recv;  /* (world, slice) every rank's copy of this rank's slice */
  int64_t *lo;    /* (world + 1) slice bounds */
};

extern "C" bool qt_dist_have_nccl(void) { return nccl_load(); }

extern "C" qt_status qt_dist_nccl_init(int64_t n, qt_dist_nccl **out) {
  const qt_dist *w = qt_dist_world();
  *out = NULL;
  if (!nccl_load()) return qt_fail(QT_ERR_UNSUPPORTED, "NCCL: %s", nccl.why);
  QT_TRY(qt_dist_cuda_select_device());
  qt_dist_nccl *c = (qt_dist_nccl *)calloc(1, sizeof *c);
  if (!c) return qt_fail(QT_ERR_NOMEM, "out of memory");
  *out = c;
  c->n = n;
  int W = w->world_size;
  c->lo = (int64_t *)calloc((size_t)W + 1, sizeof *c->lo);
  if (!c->lo) return qt_fail(QT_ERR_NOMEM, "out of memory");
  for (int j = 0; j <= W; j++) c->lo[j] = (n * j) / W;
  int64_t mine = c->lo[w->rank + 1] - c->lo[w->rank];
  ncclUniqueId id;
  if (w->rank == 0) NCCL_TRY(GetUniqueId(&id));
  QT_TRY(qt_dist_bcast(&id, sizeof id, 0));
  NCCL_TRY(CommInitRank(&c->comm, W, id, w->rank));
  c->comm_ok = true;
  QT_CUDA_CHECK(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
  QT_CUDA_CHECK(cudaMalloc((void **)&c->d_buf, (size_t)(n > 0 ? n : 1) * sizeof(float)));
  QT_CUDA_CHECK(cudaMalloc((void **)&c->d_recv, (size_t)(mine * W > 0 ? mine * W : 1) * sizeof(float)));
  return QT_OK;
}

extern "C" qt_status qt_dist_nccl_sum(qt_dist_nccl *c, float *host_buf) {
  const qt_dist *w = qt_dist_world();
  int W = w->world_size, me = w->rank;
  int64_t mine = c->lo[me + 1] - c->lo[me];
  QT_CUDA_CHECK(cudaMemcpyAsync(c->d_buf, host_buf, (size_t)c->n * sizeof(float), cudaMemcpyHostToDevice, c->stream));
  /* all-to-all: slice j of this rank's buffer to rank j; every rank's copy of slice `me` into d_recv */
  NCCL_TRY(GroupStart());
  for (int j = 0; j < W; j++) {
    NCCL_TRY(Send(c->d_buf + c->lo[j], (size_t)(c->lo[j + 1] - c->lo[j]), ncclFloat, j, c->comm, c->stream));
    NCCL_TRY(Recv(c->d_recv + (size_t)j * (size_t)mine, (size_t)mine, ncclFloat, j, c->comm, c->stream));
  }
  NCCL_TRY(GroupEnd());
  if (mine > 0) {
    int threads = 256;
    unsigned blocks = (unsigned)((mine + threads - 1) / threads);
    ordered_sum_kernel<<<blocks, threads, 0, c->stream>>>(c->d_recv, W, mine, c->d_buf + c->lo[me]);
    QT_CUDA_CHECK_LAUNCH();
  }
  /* all-gather of the summed slices; slices may differ by one element, so
   * each rank broadcasts its own (ncclAllGather needs equal counts) */
  NCCL_TRY(GroupStart());
  for (int j = 0; j < W; j++)
    NCCL_TRY(Broadcast(c->d_buf + c->lo[j], c->d_buf + c->lo[j], (size_t)(c->lo[j + 1] - c->lo[j]), ncclFloat, j,
                           c->comm, c->stream));
  NCCL_TRY(GroupEnd());
  QT_CUDA_CHECK(cudaMemcpyAsync(host_buf, c->d_buf, (size_t)c->n * sizeof(float), cudaMemcpyDeviceToHost, c->stream));
  QT_CUDA_CHECK(cudaStreamSynchronize(c->stream));
  return QT_OK;
}

extern "C" void qt_dist_nccl_free(qt_dist_nccl **cp) {
  qt_dist_nccl *c = *cp;
  if (!c) return;
  if (c->comm_ok) nccl.CommDestroy(c->comm);
  if (c->stream) cudaStreamDestroy(c->stream);
  cudaFree(c->d_buf);
  cudaFree(c->d_recv);
  free(c->lo);
  free(c);
  *cp = NULL;
}

#else /* CUDA without NCCL: the host reduction (MPI) serves the CUDA path too */

extern "C" bool qt_dist_have_nccl(void) { return false; }
extern "C" qt_status qt_dist_nccl_init(int64_t n, qt_dist_nccl **out) {
  *out = NULL;
  return qt_fail(QT_ERR_UNSUPPORTED, "this qlora-train was built without NCCL (QLORA_NCCL=OFF or nccl.h not found)");
}
extern "C" qt_status qt_dist_nccl_sum(qt_dist_nccl *c, float *host_buf) {
  return qt_fail(QT_ERR_UNSUPPORTED, "built without NCCL");
}
extern "C" void qt_dist_nccl_free(qt_dist_nccl **c) {}

#endif
