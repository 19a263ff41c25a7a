/* quant/quant.h — bitsandbytes-exact 4-bit (NF4/FP4) blockwise quantization with
 * double quantization, and 8-bit dynamic blockwise quantization.
 *
 * Facts: ../shared/docs/reference/formats.md sections 1-2, 3.2 and Appendix A
 * (bitsandbytes csrc/kernels.cu kQuantizeBlockwise / kDequantizeBlockwise,
 * dQuantizeNF4, dQuantizeFP4, dQuantize<0>; functional.py quantize_4bit,
 * dequantize_4bit, create_dynamic_map).
 *
 * Semantics are those of the bitsandbytes CUDA kernels (not of its CPU backend):
 *  - a tensor is flattened row-major; blocks are consecutive runs of `blocksize`
 *    elements (blocks may cross rows); the last block may be partial;
 *  - absmax[b] = max |x| over the block in fp32 (NaN ignored, like fmaxf);
 *  - normalization is reciprocal-multiply: x * (1.0f / absmax[b]) in fp32;
 *    absmax 0 gives 0 * inf = NaN, which encodes as code 0 (NF4: -1.0, so the
 *    block dequantizes to -0.0);
 *  - 4-bit codes: decision trees with strict `>` (nearest code, ties to the
 *    lower code; NaN -> 0); two codes per byte, first element in the high
 *    nibble; an odd count pads the last low nibble with the code of 0.0;
 *  - 8-bit codes: the 7-step binary search of dQuantize<0> (pivot 127, steps
 *    64..1) then the midpoint rules `x > (upper+val)*0.5f`, `x < (lower+val)*0.5f`;
 *  - dequantization: fp32 multiply code * absmax, then round to the output type
 *    (bf16: round-to-nearest-even, NaN -> 0x7FFF as CUDA's __float2bfloat16);
 *  - double quantization: offset = mean(absmax) (accumulated in double here,
 *    then rounded to fp32: bitsandbytes uses a torch float reduction whose order
 *    cannot be reproduced, so re-quantization from scratch may differ from
 *    bitsandbytes by the offset's last bits; loading uses the stored offset and
 *    is exact); absmax - offset quantized 8-bit blockwise, block 256, signed
 *    dynamic map; dequantized absmax = f32(f32(code8[q] * nested_absmax) + offset)
 *    (two fp32 roundings, formats.md 1.5).
 *
 * `_ref` functions are scalar, single-threaded and the single truth. The other
 * CPU functions are the OpenMP fast path, bit-identical to `_ref` (tests check).
 * `threads` <= 0 means the OpenMP default. All pointers are host memory unless
 * the function name ends in `_cuda`. Nothing here allocates except
 * qt_quant_weight_* functions. */
#ifndef QT_QUANT_QUANT_H
#define QT_QUANT_QUANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/safetensors.h"
#include "common/status.h"
#include "common/tensor.h"

typedef enum { QT_QUANT_NF4 = 0, QT_QUANT_FP4 = 1 } qt_quant_type;

enum {
  QT_QUANT_DEFAULT_BLOCKSIZE = 64,
  QT_QUANT_NESTED_BLOCKSIZE = 256, /* fixed by bitsandbytes (formats.md 1.4) */
  QT_QUANT_MIN_BLOCKSIZE = 32,
  QT_QUANT_MAX_BLOCKSIZE = 4096
};

/* "nf4" / "fp4"; from_name returns false for any other name. */
const char *qt_quant_type_name(qt_quant_type t);
bool qt_quant_type_from_name(const char *name, qt_quant_type *out);

/* True for the 4-bit blocksizes bitsandbytes accepts: 32, 64, ..., 4096. */
bool qt_quant_blocksize_valid(int blocksize);
/* ceil(n / blocksize). */
int64_t qt_quant_nblocks(int64_t n, int blocksize);

/* The 16-entry fp32 value table of a 4-bit type, index = code, as the CUDA
 * kernels dequantize: NF4 as in formats.md 1.1; FP4 = bit-pattern table / 12
 * with code 8 = -0 (kernel: lut[0] * -1). bitsandbytes' stored `quant_map` has
 * +0 at FP4 index 8 (its Python literal -0 is the integer 0); the reader
 * compares numerically. Static storage. */
const float *qt_quant_4bit_table(qt_quant_type t);

/* create_dynamic_map(signed=is_signed, max_exponent_bits=7, total_bits=8):
 * 256 sorted fp32 values, computed as bitsandbytes does (torch CPU float32
 * linspace, FMA-style; formats.md 3.2). */
void qt_quant_dynamic_map(bool is_signed, float out[256]);

/* ---- scalar encoders (kernels.cu dQuantizeNF4 / dQuantizeFP4 / dQuantize<0>) ---- */
uint8_t qt_quant_4bit_encode_ref(qt_quant_type t, float x);
/* code: 256 sorted values (a dynamic map). */
uint8_t qt_quant_8bit_encode_ref(const float code[256], float x);

/* fp32 -> bf16 bits, round-to-nearest-even (NaN -> 0x7FFF). */
uint16_t qt_quant_f32_to_bf16(float x);

/* ---- 4-bit blockwise ----
 * x: (n) fp32; packed: ((n+1)/2) bytes; absmax: (nblocks) fp32. */
void qt_quant_4bit_quantize_ref(qt_quant_type t, const float *x, int64_t n, int blocksize,
                                uint8_t *packed, float *absmax);
void qt_quant_4bit_quantize(qt_quant_type t, const float *x, int64_t n, int blocksize,
                            uint8_t *packed, float *absmax, int threads);
/* Same with bf16 input (x_bf16: raw bf16 bits), widened exactly to fp32. */
void qt_quant_4bit_quantize_bf16(qt_quant_type t, const uint16_t *x_bf16, int64_t n,
                                 int blocksize, uint8_t *packed, float *absmax, int threads);
/* out: (n) fp32 or bf16 bits. */
void qt_quant_4bit_dequantize_ref(qt_quant_type t, const uint8_t *packed, const float *absmax,
                                  int64_t n, int blocksize, float *out);
void qt_quant_4bit_dequantize(qt_quant_type t, const uint8_t *packed, const float *absmax,
                              int64_t n, int blocksize, float *out, int threads);
void qt_quant_4bit_dequantize_bf16_ref(qt_quant_type t, const uint8_t *packed,
                                       const float *absmax, int64_t n, int blocksize,
                                       uint16_t *out);
void qt_quant_4bit_dequantize_bf16(qt_quant_type t, const uint8_t *packed, const float *absmax,
                                   int64_t n, int blocksize, uint16_t *out, int threads);

/* ---- 8-bit dynamic blockwise (any blocksize >= 1) ----
 * code: 256 sorted values; x: (n); q: (n); absmax: (nblocks). */
void qt_quant_8bit_quantize_ref(const float code[256], const float *x, int64_t n,
                                int64_t blocksize, uint8_t *q, float *absmax);
void qt_quant_8bit_quantize(const float code[256], const float *x, int64_t n, int64_t blocksize,
                            uint8_t *q, float *absmax, int threads);
/* out[i] = code[q[i]] * absmax[i / blocksize] (fp32). */
void qt_quant_8bit_dequantize_ref(const float code[256], const uint8_t *q, const float *absmax,
                                  int64_t n, int64_t blocksize, float *out);
void qt_quant_8bit_dequantize(const float code[256], const uint8_t *q, const float *absmax,
                              int64_t n, int64_t blocksize, float *out, int threads);

/* ---- double quantization of the absmax vector (nb = number of 4-bit blocks) ----
 * Mean accumulated in double, rounded once to fp32 (bitsandbytes: a torch fp32
 * reduction; the two differ in the last bit now and then, formats.md 1.4). */
float qt_quant_absmax_mean(const float *absmax, int64_t nb);
/* qabsmax: (nb) codes of absmax - offset; nested_absmax: (ceil(nb/256)).
 * code: the signed dynamic map. qt_quant_dq_compress is the OpenMP twin. */
void qt_quant_dq_compress_ref(const float code[256], const float *absmax, int64_t nb,
                              float offset, uint8_t *qabsmax, float *nested_absmax);
void qt_quant_dq_compress(const float code[256], const float *absmax, int64_t nb, float offset,
                          uint8_t *qabsmax, float *nested_absmax, int threads);
/* absmax[b] = f32(f32(code[qabsmax[b]] * nested_absmax[b / 256]) + offset). */
void qt_quant_dq_decompress_ref(const float code[256], const uint8_t *qabsmax,
                                const float *nested_absmax, float offset, int64_t nb,
                                float *absmax);

/* Bits per parameter of a 4-bit tensor of n elements:
 * (4 * n_padded + 32 * nb) / n without DQ; (4 * n_padded + 8 * nb + 32 * nnb + 32) / n with
 * DQ (the +32 is the fp32 offset). n_padded = 2 * ((n + 1) / 2). */
double qt_quant_bits_per_param(int64_t n, int blocksize, bool double_quant);

/* ---- a quantized weight (owned buffers) ---- */
typedef struct {
  qt_quant_type type;
  int blocksize;
  qt_dtype dtype;              /* dtype the weight had when quantized (F32/F16/BF16) */
  int ndim;
  int64_t shape[QT_MAX_DIMS];
  int64_t n;                   /* numel */
  int64_t nblocks;             /* ceil(n / blocksize) */
  uint8_t *packed;             /* ((n+1)/2) bytes, high nibble first */
  bool nested;                 /* double quantization */
  float *absmax;               /* (nblocks) fp32, when !nested */
  uint8_t *qabsmax;            /* (nblocks) 8-bit codes, when nested */
  float *nested_absmax;        /* (ceil(nblocks / nested_blocksize)), when nested */
  int nested_blocksize;        /* 256 */
  float offset;                /* when nested */
  float nested_code[256];      /* when nested: the map stored with the weight */
} qt_quant_weight;

/* Quantizes x (n = prod(shape) fp32 values) into a freshly allocated weight
 * (free with qt_quant_weight_free). With double quant the offset is the
 * double-accumulated mean (see above). dtype is recorded (the dtype
 * bitsandbytes dequantizes to). */
qt_status qt_quant_weight_quantize(qt_quant_type t, int blocksize, bool double_quant,
                                   qt_dtype dtype, int ndim, const int64_t *shape,
                                   const float *x, int threads, qt_quant_weight *out);
/* Recovers the fp32 absmax vector (nblocks) of a weight (DQ decompressed). */
void qt_quant_weight_absmax(const qt_quant_weight *w, float *absmax);
/* out: (n) fp32 / bf16 bits, in the weight's flattened order. A double-quant
 * weight decompresses its absmax into a temporary (nblocks floats). */
qt_status qt_quant_weight_dequantize_f32(const qt_quant_weight *w, float *out, int threads);
qt_status qt_quant_weight_dequantize_bf16(const qt_quant_weight *w, uint16_t *out, int threads);
void qt_quant_weight_free(qt_quant_weight *w);

/* Builds a weight from the safetensors entries bitsandbytes/transformers write
 * for `P.weight` (formats.md section 2). weight: packed bytes in any storage
 * dtype (raw bytes are used); absmax: F32 (plain) or U8 (nested);
 * quant_map: F32[16] (must equal the 4-bit table of quant_type); nested_absmax,
 * nested_quant_map: NULL unless nested; quant_state: the U8 JSON entry. `label`
 * names the tensor in messages. Copies everything (the file may be closed). */
qt_status qt_quant_weight_from_bnb(const char *label, const qt_st_entry *weight,
                                   const qt_st_entry *absmax, const qt_st_entry *quant_map,
                                   const qt_st_entry *nested_absmax,
                                   const qt_st_entry *nested_quant_map,
                                   const qt_st_entry *quant_state, qt_quant_weight *out);
/* Looks up `<prefix>.weight`, `.weight.absmax`, ... in a model and calls
 * qt_quant_weight_from_bnb. prefix e.g. "model.layers.0.self_attn.q_proj". */
qt_status qt_quant_weight_load_bnb(const qt_st_model *m, const char *prefix,
                                   qt_quant_weight *out);

/* ---- CUDA (quant_cuda.cu; only with QLORA_HAVE_CUDA) ----
 * Device pointers; stream is a cudaStream_t (NULL = default stream). Each
 * returns QT_ERR_CUDA with the CUDA error string on launch failure. */
#ifdef QLORA_HAVE_CUDA
qt_status qt_quant_4bit_quantize_cuda(qt_quant_type t, const float *x, int64_t n, int blocksize,
                                      uint8_t *packed, float *absmax, void *stream);
qt_status qt_quant_4bit_quantize_bf16_cuda(qt_quant_type t, const uint16_t *x, int64_t n,
                                           int blocksize, uint8_t *packed, float *absmax,
                                           void *stream);
qt_status qt_quant_4bit_dequantize_cuda(qt_quant_type t, const uint8_t *packed,
                                        const float *absmax, int64_t n, int blocksize,
                                        float *out, void *stream);
qt_status qt_quant_4bit_dequantize_bf16_cuda(qt_quant_type t, const uint8_t *packed,
                                             const float *absmax, int64_t n, int blocksize,
                                             uint16_t *out, void *stream);
/* code: device (256). */
qt_status qt_quant_8bit_quantize_cuda(const float *code, const float *x, int64_t n,
                                      int64_t blocksize, uint8_t *q, float *absmax,
                                      void *stream);
qt_status qt_quant_8bit_dequantize_cuda(const float *code, const uint8_t *q, const float *absmax,
                                        int64_t n, int64_t blocksize, float *out, void *stream);
/* Double quantization with a given offset (compute it with qt_quant_absmax_mean). */
qt_status qt_quant_dq_compress_cuda(const float *code, const float *absmax, int64_t nb,
                                    float offset, uint8_t *qabsmax, float *nested_absmax,
                                    void *stream);
qt_status qt_quant_dq_decompress_cuda(const float *code, const uint8_t *qabsmax,
                                      const float *nested_absmax, float offset, int64_t nb,
                                      float *absmax, void *stream);
#endif

#endif
