/* tests/common/cuda_test_util.c — the skip policy and data paths of the
 * `cuda` tests (contract: cuda_test_util.h). */
#include "cuda_test_util.h"

#include <cuda_runtime_api.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Signs that an NVIDIA driver is installed: its device nodes (/dev/nvidia0,
 * /dev/nvidiactl, /dev/nvidia-uvm, ...), its kernel module (/proc/driver/nvidia
 * exists while nvidia.ko is loaded), or WSL's GPU node /dev/dxg. Writes the
 * first one found into what; 0 when there is none. */
static int nvidia_driver_seen(char *what, size_t cap) {
  if (access("/proc/driver/nvidia", F_OK) == 0) {
    snprintf(what, cap, "/proc/driver/nvidia");
    return 1;
  }
  if (access("/dev/dxg", F_OK) == 0) {
    snprintf(what, cap, "/dev/dxg");
    return 1;
  }
  DIR *d = opendir("/dev");
  if (!d) return 0;
  int seen = 0;
  for (struct dirent *e; !seen && (e = readdir(d)) != NULL;)
    if (strncmp(e->d_name, "nvidia", 6) == 0) {
      snprintf(what, cap, "/dev/%s", e->d_name);
      seen = 1;
    }
  closedir(d);
  return seen;
}

/* What an initialisation error most likely means, for the failure message. */
static const char *likely_cause(cudaError_t e) {
  switch (e) {
  case cudaErrorInsufficientDriver:
    return "the installed NVIDIA driver is older than this CUDA runtime (a driver/runtime "
           "mismatch): run with a libcudart the driver supports, or update the driver";
  case cudaErrorSystemDriverMismatch:
  case cudaErrorCompatNotSupportedOnDevice:
    return "the driver library (libcuda.so) does not match the loaded nvidia kernel module, "
           "or a forward-compatibility libcuda is used on a GPU that does not support it: a "
           "driver/runtime mismatch; check nvidia-smi and which libcuda.so.1 is loaded";
  case cudaErrorNotPermitted:
  case cudaErrorDevicesUnavailable:
    return "the GPU exists but this process may not use it: no permission on /dev/nvidia* "
           "(container without the GPU devices, cgroup rules) or the GPU is in exclusive or "
           "prohibited compute mode";
  case cudaErrorSystemNotReady:
    return "the driver is not ready (fabric manager or persistence daemon not running)";
  default:
    return "the CUDA runtime could not initialise although an NVIDIA driver is present: "
           "likely a driver/runtime mismatch (libcuda.so vs the kernel module vs libcudart) "
           "or no access to /dev/nvidia* (permissions, container or VM without the GPU "
           "devices); check nvidia-smi and ls -l /dev/nvidia*";
  }
}

int ctu_gpu_check(const char *test) {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e == cudaSuccess && n > 0) return 0;
  if (e == cudaSuccess) {
    printf("%s: skipped: the CUDA runtime reports 0 devices\n", test);
    return 77;
  }
  char seen[300] = "";
  if (e == cudaErrorNoDevice) {
    /* Skipped as the policy says; where a driver is installed, say so, since a
     * hidden GPU (CUDA_VISIBLE_DEVICES) also reads as "no device". */
    const char *vis = getenv("CUDA_VISIBLE_DEVICES");
    printf("%s: skipped: no CUDA device (%s: %s)", test, cudaGetErrorName(e), cudaGetErrorString(e));
    if (nvidia_driver_seen(seen, sizeof seen))
      printf("; note: %s exists, CUDA_VISIBLE_DEVICES is %s%s%s", seen, vis ? "\"" : "",
             vis ? vis : "unset", vis ? "\"" : "");
    printf("\n");
    return 77;
  }
  /* Without any NVIDIA driver, libcudart finds no libcuda.so and reports
   * cudaErrorInsufficientDriver, not cudaErrorNoDevice (measured on the CPU
   * build machine: no /dev/nvidia*, no /proc/driver/nvidia). That machine has
   * no GPU, so this is a skip. The same error where a driver is installed (a
   * device node or the kernel module is there) is a real driver/runtime
   * mismatch and fails below. */
  if (e == cudaErrorInsufficientDriver && !nvidia_driver_seen(seen, sizeof seen)) {
    printf("%s: skipped: no NVIDIA driver installed (%s: %s; no /dev/nvidia*, no "
           "/proc/driver/nvidia, no /dev/dxg)\n",
           test, cudaGetErrorName(e), cudaGetErrorString(e));
    return 77;
  }
  if (!seen[0]) nvidia_driver_seen(seen, sizeof seen);
  int drv = 0, rt = 0;
  /* Diagnostics only: a failing version query leaves 0, reported as such. */
  if (cudaDriverGetVersion(&drv) != cudaSuccess) drv = 0;
  if (cudaRuntimeGetVersion(&rt) != cudaSuccess) rt = 0;
  char drv_text[64];
  if (drv > 0)
    snprintf(drv_text, sizeof drv_text, "driver supports CUDA %d.%d", drv / 1000, drv % 1000 / 10);
  else
    snprintf(drv_text, sizeof drv_text, "no loadable libcuda.so.1");
  const char *cause = e == cudaErrorInsufficientDriver && drv == 0
                          ? "the kernel driver is there but its user-space library libcuda.so.1 "
                            "is not found or not loadable (a container without the driver "
                            "libraries mounted, or a library path that misses them)"
                          : likely_cause(e);
  fprintf(stderr,
          "%s: FAIL: cudaGetDeviceCount failed with %s: %s. This is not \"no GPU\" (driver "
          "evidence: %s; %s; runtime is CUDA %d.%d): %s.\n",
          test, cudaGetErrorName(e), cudaGetErrorString(e), seen[0] ? seen : "none found",
          drv_text, rt / 1000, rt % 1000 / 10, cause);
  return 1;
}

static const char *env_or(const char *name, const char *fallback) {
  const char *v = getenv(name);
  return v && *v ? v : fallback;
}

const char *ctu_shared_dir(void) { return env_or("QLORA_SHARED_DIR", QLORA_SHARED_DIR); }

const char *ctu_test_dir(void) { return env_or("QLORA_TEST_DIR", QLORA_TEST_DIR); }

char *ctu_path(char *buf, size_t cap, const char *dir, const char *rel) {
  int n = snprintf(buf, cap, "%s/%s", dir, rel);
  if (n < 0 || (size_t)n >= cap) {
    fprintf(stderr, "path %s/%s is longer than %zu bytes\n", dir, rel, cap);
    exit(1);
  }
  return buf;
}
