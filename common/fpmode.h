/* common/fpmode.h — the floating-point mode of the CPU training math.
 *
 * qlora-train runs its forward, backward and optimizer math with subnormal
 * floats flushed to zero (training.flush_subnormals, default true): results
 * below FLT_MIN (1.2e-38) become 0 and subnormal inputs read as 0, the x86
 * MXCSR flush-to-zero and denormals-are-zero bits, TensorFlow's default for its
 * CPU kernels (torch: torch.set_flush_denormal(True)). Why: attention
 * probabilities far below the row maximum times small gradients produce
 * subnormal products inside the GEMMs, and each subnormal operation takes a
 * microcode assist of ~100 cycles; on stories260K that cost a third of the
 * training step (bench/RESULTS.md). Values that small change no fp32 sum they
 * enter. Model loading, quantization and export run before the mode is set and
 * keep IEEE subnormals, so quantized codes and merged weights match the
 * reference libraries bit for bit.
 *
 * The mode is per thread: qt_fp_flush_subnormals sets it on the calling thread,
 * on every thread of the OpenMP pool (one parallel region of `threads`
 * threads), and the caller restarts OpenBLAS's own pool (train/session.c). */
#pragma once

#include <stdbool.h>

/* Sets flush-to-zero + denormals-are-zero on the calling thread; false where the
 * target has no such mode here (only x86-64 SSE is handled) or it did not stick. */
bool qt_fp_flush_subnormals_here(void);

/* Whether the calling thread flushes subnormals (reads the mode back). */
bool qt_fp_flushing_subnormals(void);

/* The calling thread and `threads` OpenMP threads (>= 1); false as above. */
bool qt_fp_flush_subnormals(int threads);

/* Back to IEEE subnormals on the calling thread and `threads` OpenMP threads. */
void qt_fp_keep_subnormals(int threads);
