/* train/main.c — the qlora-train command line (contract: DESIGN.md section 5).
 * Only main() prints errors and exits: every command returns a qt_status. */
#include <cblas.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "autograd/ops.h"
#include "common/log.h"
#include "common/status.h"
#include "dist/dist.h"
#include "train/cli.h"

#include "qt_version.h" /* QLORA_GIT_COMMIT, written at build time */

#ifndef QLORA_VERSION
#define QLORA_VERSION "0.0.0"
#endif
#ifndef QLORA_BUILD_TYPE
#define QLORA_BUILD_TYPE "unknown"
#endif
#ifndef QLORA_CUDA_ARCHS
#define QLORA_CUDA_ARCHS ""
#endif
#ifndef QLORA_C_COMPILER
#define QLORA_C_COMPILER "unknown"
#endif

/* What a bug report needs: version, commit, build type and compiler, the CUDA
 * targets compiled in, and the BLAS kernels this CPU runs (they decide the
 * last bits of every CPU result), and whether its bf16 GEMMs run here. */
static void print_version(void) {
  printf("qlora-train %s\n", QLORA_VERSION);
  printf("commit: %s\n", QLORA_GIT_COMMIT);
  printf("build: %s, %s\n", QLORA_BUILD_TYPE, QLORA_C_COMPILER);
#ifdef QLORA_HAVE_CUDA
  printf("cuda: yes, architectures %s\n", QLORA_CUDA_ARCHS);
#else
  printf("cuda: no\n");
#endif
  const char *core = openblas_get_corename();
  const char *cfg = openblas_get_config();
  int par = openblas_get_parallel(); /* 0 sequential, 1 pthreads, 2 OpenMP */
  printf("blas: core %s (threading %s; %s)\n", core ? core : "unknown",
         par == 2 ? "openmp" : par == 1 ? "pthreads" : "none", cfg ? cfg : "OpenBLAS");
  const char *why = NULL;
  if (qt_op_bf16_gemm_available(&why))
    printf("cpu bf16 GEMMs: oneDNN, %s (model.compute_dtype bf16 uses them)\n", qt_op_bf16_gemm_isa());
  else
    printf("cpu bf16 GEMMs: no (%s; the CPU computes in fp32)\n", why);
  printf("multi-process: %s\n", qt_dist_backend());
#ifdef QLORA_HAVE_CUDA
  printf("nccl: %s\n", qt_dist_have_nccl() ? "yes (libnccl.so.2 loaded)" : "no (built without nccl.h, or libnccl.so.2 not found)");
#endif
}

static void print_usage(FILE *f) {
  fputs(
      "usage:\n"
      "  qlora-train CONFIG.yaml [--set KEY=VALUE]...           train\n"
      "  qlora-train eval CONFIG.yaml [--checkpoint DIR] [--data FILE] [--set ...]\n"
      "  qlora-train export CONFIG.yaml [--checkpoint DIR] [--format peft|merged|gguf|gguf-lora] [--out DIR|FILE.gguf]\n"
      "  qlora-train generate CONFIG.yaml [--checkpoint DIR] (--prompt TEXT | --chat [--prompt TEXT] [--system TEXT]\n"
      "      | --prompts FILE.jsonl [--out FILE.jsonl]) [--max-new-tokens N] [--temperature T] [--top-k K]\n"
      "      [--top-p P] [--min-p P] [--repetition-penalty R] [--seed N] [--stop STRING]... [--context N]\n"
      "  qlora-train tokenize DIR [--bos] [--eos] [--decode]\n"
      "  qlora-train inspect PATH     tensors of a safetensors file / model dir / checkpoint\n"
      "  qlora-train --help | --version\n"
      "\n"
      "Exit status: 0 success, 1 user error (the message names the file, key or line), 2 usage error.\n",
      f);
}

/* OpenBLAS's kernel set for a CPU its cpuid table does not know. OpenBLAS
 * 0.3.21 (Debian 12) falls back to its SSE3 "Prescott" kernels on newer Intel
 * models (family 6 model 207 on the team machine): one-core sgemm 22-32
 * GFLOP/s there instead of ~150 with the AVX-512 kernels, and a 100M-parameter
 * LoRA step 4x slower (bench/RESULTS.md, training benchmark). OpenBLAS reads
 * OPENBLAS_CORETYPE before main, so the name goes into the same restart as the
 * wait policy. NULL: keep what OpenBLAS chose. */
static const char *openblas_core_override(void) {
  if (getenv("OPENBLAS_CORETYPE") != NULL) return NULL;
  const char *core = openblas_get_corename();
  if (core == NULL || strcmp(core, "Prescott") != 0) return NULL;
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
    return "SkylakeX";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
  return NULL;
}

/* OpenMP threads that spin while waiting make a loaded machine crawl (measured
 * on the 2-core CI machine with other processes running: 10 steps of the demo
 * took 140 s with GNU OpenMP's default policy, 13 s with passive waiting). The
 * policy is read when libgomp starts, before main, so the program restarts
 * itself once with OMP_WAIT_POLICY=passive unless the user chose a policy
 * (and with OPENBLAS_CORETYPE when openblas_core_override names one). */
static void prefer_passive_openmp(char **argv) {
  const char *core = openblas_core_override();
  bool restart = false;
  if (core != NULL && setenv("OPENBLAS_CORETYPE", core, 1) == 0) restart = true;
  if (getenv("OMP_WAIT_POLICY") == NULL && setenv("OMP_WAIT_POLICY", "passive", 1) == 0) restart = true;
  if (!restart) return;
  execv("/proc/self/exe", argv);
  /* exec failed (no /proc): carry on with the default policy */
}

/* The exit of a command: with several ranks an error on any one takes the
 * job down (MPI_Abort), naming the rank; a stop after a clean save is agreed
 * by all ranks and ends them normally. */
static int finish(qt_status s) {
  const qt_dist *d = qt_dist_world();
  if (d->world_size > 1 && s != QT_OK && s != QT_ERR_INTERRUPTED) {
    fprintf(stderr, "qlora-train: rank %d of %d failed (%s); stopping all ranks\n", d->rank, d->world_size,
            qt_status_name(s));
    qt_dist_abort(qt_status_exit_code(s));
  }
  qt_dist_finalize();
  return qt_status_exit_code(s);
}

/* The prefix of error messages: "qlora-train" or "qlora-train (rank 1 of 2)". */
static const char *who(void) {
  static char buf[64];
  const qt_dist *d = qt_dist_world();
  if (d->world_size == 1) return "qlora-train";
  snprintf(buf, sizeof buf, "qlora-train (rank %d of %d)", d->rank, d->world_size);
  return buf;
}

int main(int argc, char **argv) {
  prefer_passive_openmp(argv);
  /* MPI only under a launcher (dist.h); ranks other than 0 print errors only */
  qt_status ds = qt_dist_init(&argc, &argv);
  if (ds != QT_OK) {
    fprintf(stderr, "qlora-train: %s: %s\n", qt_status_name(ds), qt_error_message());
    qt_dist_abort(1);
    return 1;
  }
  if (qt_dist_world()->rank != 0) qt_log_set_level(QT_LOG_ERROR);
  if (argc < 2) {
    print_usage(stderr);
    qt_dist_finalize();
    return 2;
  }
  const char *cmd = argv[1];
  if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
    print_usage(stdout);
    qt_dist_finalize();
    return 0;
  }
  if (strcmp(cmd, "--version") == 0) {
    print_version();
    qt_dist_finalize();
    return 0;
  }
  for (const qt_cli_command *c = qt_cli_commands; c->name; c++) {
    if (strcmp(cmd, c->name) == 0) {
      qt_status s = c->run(argc - 2, argv + 2);
      if (s != QT_OK) {
        if (s == QT_ERR_USAGE) {
          fprintf(stderr, "%s %s: %s\n", who(), c->name, qt_error_message());
          fprintf(stderr, "usage: qlora-train %s\n", c->usage);
        } else {
          fprintf(stderr, "%s: %s: %s\n", who(), qt_status_name(s), qt_error_message());
        }
      }
      return finish(s);
    }
  }
  if (cmd[0] == '-') {
    fprintf(stderr, "qlora-train: unknown option '%s'\n", cmd);
    print_usage(stderr);
    qt_dist_finalize();
    return 2;
  }
  qt_status s = qt_cli_train(argc - 1, argv + 1);
  /* the stop message after a clean save is rank 0's alone */
  if (s != QT_OK && (s != QT_ERR_INTERRUPTED || qt_dist_world()->rank == 0))
    fprintf(stderr, "%s: %s: %s\n", who(), qt_status_name(s), qt_error_message());
  return finish(s);
}
