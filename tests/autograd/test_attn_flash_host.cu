/* tests/autograd/test_attn_flash.c compiled by nvcc: the flash attention
 * bodies of autograd/kernels/attention_flash.h as the __host__ __device__ code
 * the CUDA kernels run, executed on the host (no GPU needed). */
#include "test_attn_flash.c"
