/* dist/dist.h — data-parallel ranks: MPI to launch them and, on CPUs, as the
 * collective library; NCCL for the gradient reduction on GPUs
 * (DESIGN.md section 9, README "Several processes").
 *
 * Contract.
 * - One process per rank. `mpirun -np N qlora-train CONFIG` (or srun where
 *   its MPI is set up) starts N of them. qt_dist_init initializes MPI only
 *   when a launcher's environment says it started this process
 *   (OMPI_COMM_WORLD_SIZE, PMI_SIZE, PMIX_RANK, ...; `mpirun -np 1` too,
 *   which then trains like a plain run, bit for bit); a plain
 *   `qlora-train CONFIG` never touches MPI and is the single process of
 *   before, bit for bit. A build without MPI (QLORA_MPI=OFF) refuses a
 *   launch with more than one rank instead of running N copies side by side.
 * - Process state: the world (rank, size, node-local rank) is one per
 *   process, as MPI_COMM_WORLD is; qt_dist_world() reads it. main() calls
 *   qt_dist_init first and qt_dist_finalize (or qt_dist_abort) last.
 * - Every collective is called by all ranks in the same order (the training
 *   loop is written so); with world_size 1 each returns at once, unchanged.
 * - Determinism: the float reductions below add the ranks' contributions in
 *   rank order 0, 1, ..., N-1 in double and round once, and every rank ends
 *   with the same bits. MPI_Allreduce does not promise that (its algorithm,
 *   and so its order of additions, depends on the size, the world and the
 *   library's tuning), so floats never go through it; only exact int64 sums
 *   and maxima do.
 * - Failure: a status comes back for everything MPI or NCCL reports; main()
 *   turns any error on any rank into qt_dist_abort (MPI_Abort), which takes
 *   the whole job down. A rank that dies (kill -9, out of memory) is seen by
 *   the launcher (OpenMPI's mpirun: "exited on signal 9"), which kills the
 *   others; a rank that hangs while alive is ended by the watchdog below. */
#ifndef QT_DIST_DIST_H
#define QT_DIST_DIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
  int rank, world_size;   /* 0 <= rank < world_size */
  int local_rank, local_size; /* among the ranks of this node (GPU index) */
  bool mpi;               /* MPI was initialized by qt_dist_init */
} qt_dist;

/* Reads the launcher's environment and initializes MPI when this process is
 * one rank of several (MPI_Init_thread, MPI_THREAD_FUNNELED: only the main
 * thread calls MPI; OpenMP threads never do). QT_ERR_UNSUPPORTED when a
 * launcher started several ranks of a build without MPI. */
qt_status qt_dist_init(int *argc, char ***argv);
/* The world of this process (world_size 1 before/without qt_dist_init). */
const qt_dist *qt_dist_world(void);
/* MPI_Finalize when MPI was initialized. */
void qt_dist_finalize(void);
/* Takes every rank down (MPI_Abort) with exit status code; returns only
 * when MPI is not in use (single process), and the caller then exits. */
void qt_dist_abort(int code);
/* "MPI (Open MPI 4.1.4)" or "none": for --version. */
const char *qt_dist_backend(void);

/* Exact collectives on small int64 arrays (n <= 64), result on every rank. */
qt_status qt_dist_sum_i64(int64_t *v, int n);
qt_status qt_dist_max_i64(int64_t *v, int n);
/* v[0..n) summed over ranks in rank order (double), same bits on every
 * rank; n <= 64. */
qt_status qt_dist_sum_f64(double *v, int n);
/* Root's bytes to every rank. */
qt_status qt_dist_bcast(void *buf, size_t bytes, int root);
/* Root receives every rank's v[0..n) (n <= 64) into all[rank * n + i];
 * `all` (world_size * n) is used on root only. */
qt_status qt_dist_gather_i64(const int64_t *v, int n, int64_t *all, int root);

/* The gradient reduction: a flat float buffer of n elements summed over
 * ranks, in place, same bits on every rank. Reduce-scatter then all-gather
 * (the bandwidth of a ring all-reduce, 2 (N-1)/N x n floats per rank):
 * rank r owns elements [n r / N, n (r+1) / N); an all-to-all hands it every
 * rank's copy of that slice, it adds them in rank order in double and
 * rounds once, and an all-gather returns the summed slices to everyone.
 * The scratch (one slice per rank, about n floats) is allocated by _init,
 * nothing in _sum. On the host through MPI; with NCCL see below. */
typedef struct {
  int64_t n;
  float *recv;      /* (world_size, slice) */
  int *counts, *displs; /* (world_size) in elements */
} qt_dist_reducer;
qt_status qt_dist_reducer_init(qt_dist_reducer *r, int64_t n);
qt_status qt_dist_reducer_sum(qt_dist_reducer *r, float *buf);
void qt_dist_reducer_free(qt_dist_reducer *r);

/* ---- watchdog: a rank that hangs while alive ----------------------------
 * A dead rank is seen by the launcher; a live one that hangs (a stuck
 * filesystem, a GPU that stopped answering) leaves the others waiting in a
 * collective for ever, and MPI has no collective timeout. The watchdog is a
 * thread that ends this process with SIGKILL (so the launcher takes the job
 * down; a checkpoint being written is never sealed half-way, see
 * train/checkpoint.h) when qt_dist_progress has not been called for
 * timeout_s seconds, after printing which rank and how long. The training
 * loop calls qt_dist_progress after every step, evaluation and checkpoint;
 * timeout_s must cover the longest of them (rank 0's evaluation and
 * checkpoint, which the others wait for). Only with world_size > 1 and
 * timeout_s > 0; _stop joins the thread. */
qt_status qt_dist_watchdog_start(double timeout_s);
void qt_dist_progress(void);
void qt_dist_watchdog_stop(void);

/* ---- GPUs (dist_cuda.cu; built with the CUDA backend) -------------------
 * qt_dist_cuda_select_device: cudaSetDevice(local_rank), so that the ranks
 * of a node take one GPU each; QT_ERR_CUDA when the node has fewer GPUs
 * than ranks. With QLORA_NCCL the NCCL communicator: rank 0 makes the
 * ncclUniqueId, MPI_Bcast hands it to the others, ncclCommInitRank over all
 * ranks. qt_dist_nccl_sum is qt_dist_reducer_sum's algorithm on the device
 * (ncclSend/ncclRecv all-to-all in a group, a kernel that adds the slices in
 * rank order in double, ncclAllGather), same bits on every rank. Its
 * argument is a host buffer: the training loop's CUDA path (model_cuda.h)
 * brings each micro-batch's LoRA gradients back to the host, where they
 * accumulate, so the reduction uploads the step's sum once, reduces it on
 * the GPUs and downloads it (2 copies of n floats per optimizer step). */
bool qt_dist_have_nccl(void);
/* out[k] = the sum over j = 0 .. world-1, in that order, of recv[j m + k], in
 * double, rounded once to float: the reduction's arithmetic, on the CPU
 * (qt_dist_reducer_sum) and, in qt_dist_cuda_ordered_sum, by the GPU kernel
 * that qt_dist_nccl_sum launches (on host buffers, for its parity test,
 * tests/dist/test_dist_cuda.c; CUDA builds only). */
void qt_dist_ordered_sum(const float *recv, int world, int64_t m, float *out);
qt_status qt_dist_cuda_ordered_sum(const float *recv, int world, int64_t m, float *out);
qt_status qt_dist_cuda_select_device(void);
typedef struct qt_dist_nccl qt_dist_nccl;
qt_status qt_dist_nccl_init(int64_t n, qt_dist_nccl **out);
qt_status qt_dist_nccl_sum(qt_dist_nccl *c, float *host_buf);
void qt_dist_nccl_free(qt_dist_nccl **c);

#ifdef __cplusplus
}
#endif

#endif
