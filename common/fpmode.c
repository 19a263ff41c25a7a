/* common/fpmode.c — flush-to-zero / denormals-are-zero (see fpmode.h). */
#include "common/fpmode.h"

#if defined(__x86_64__) && defined(__SSE2__)
#include <pmmintrin.h>
#include <xmmintrin.h>
#define QT_FP_HAVE_MXCSR 1
#endif

bool qt_fp_flush_subnormals_here(void) {
#ifdef QT_FP_HAVE_MXCSR
  _MM_SET_FLUSH_ZERO_MODE(_MM_FLUSH_ZERO_ON);
  _MM_SET_DENORMALS_ZERO_MODE(_MM_DENORMALS_ZERO_ON);
  return qt_fp_flushing_subnormals();
#else
  return false;
#endif
}

bool qt_fp_flushing_subnormals(void) {
#ifdef QT_FP_HAVE_MXCSR
  return _MM_GET_FLUSH_ZERO_MODE() == _MM_FLUSH_ZERO_ON &&
         _MM_GET_DENORMALS_ZERO_MODE() == _MM_DENORMALS_ZERO_ON;
#else
  return false;
#endif
}

bool qt_fp_flush_subnormals(int threads) {
  bool ok = qt_fp_flush_subnormals_here();
  if (threads < 1) threads = 1;
  int bad = 0;
#pragma omp parallel num_threads(threads) reduction(+ : bad)
  bad += !qt_fp_flush_subnormals_here();
  return ok && bad == 0;
}

static void keep_here(void) {
#ifdef QT_FP_HAVE_MXCSR
  _MM_SET_FLUSH_ZERO_MODE(_MM_FLUSH_ZERO_OFF);
  _MM_SET_DENORMALS_ZERO_MODE(_MM_DENORMALS_ZERO_OFF);
#endif
}

void qt_fp_keep_subnormals(int threads) {
  keep_here();
  if (threads < 1) threads = 1;
#pragma omp parallel num_threads(threads)
  keep_here();
}
