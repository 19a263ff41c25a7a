/* tests/autograd/test_attn_tile.c compiled by nvcc: the tile classifier of
 * autograd/kernels/attention_mask.h as __host__ __device__ code, the form the
 * CUDA kernels use, run on the host (no GPU needed). */
#include "test_attn_tile.c"
