/* tests/autograd/test_attn_flash.c compiled by nvcc: the flash attention
 * bodies of autograd/kernels/attention_flash.h as the __host__ __device__ code
 * the CUDA kernels run, executed on the host (no GPU needed), in the test's
 * light form (one thread per block, tiles 64 and 16). */
#define QT_ATTN_FLASH_TWIN 1 /* the light run: the plain C build runs the full one */
#include "test_attn_flash.c"
