/* tests/quant/test_quant_hd.c compiled by nvcc: quant/quant_hd.h as the
 * __host__ __device__ code the GPU kernel runs, on the host (no GPU needed). */
#include "test_quant_hd.c"
