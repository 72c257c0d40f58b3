#include <cuda_fp16.h>

// Ternary GEMM kernels for the CUDA backend, compiled at run time by CuPy (NVRTC).
//
// Both kernels read the weights exactly as they sit in the GGUF file and accumulate the
// integer dot product of 2-bit codes and int8 activations in int32, so the integer part is
// exact; only the final float scaling happens in float.
//
// Launch: grid (ceil(out / ROWS_PER_BLOCK), T), block (32, ROWS_PER_BLOCK): one warp per
// output row and activation row; lane l reads byte l of every 32-byte group, so a warp's loads
// are coalesced.

extern "C" {

// Microsoft I2_S, x86 layout: blocks of 128 elements = 32 bytes; element j of a block sits in
// byte j % 32 at bit shift 6 - 2 * (j / 32); code 0/1/2 = -1/0/+1. Row r starts at byte r*K/4.
// y[t, r] = (sum_j (code_j - 1) * xq[t, j]) / xs[t] * wscale
__global__ void i2s_x86_gemm(const unsigned char* __restrict__ w, const signed char* __restrict__ xq,
                             const float* __restrict__ xs, float* __restrict__ y,
                             int out, int K, float wscale) {
    const int lane = threadIdx.x;
    const int row = blockIdx.x * blockDim.y + threadIdx.y;
    const int t = blockIdx.y;
    if (row >= out) return;
    const unsigned char* wr = w + (size_t)row * (K / 4);
    const signed char* xr = xq + (size_t)t * K;
    int acc = 0;
    for (int blk = 0; blk < K / 128; ++blk) {
        const unsigned int b = wr[blk * 32 + lane];
        const signed char* xb = xr + blk * 128 + lane;
        acc += ((int)((b >> 6) & 3) - 1) * (int)xb[0];
        acc += ((int)((b >> 4) & 3) - 1) * (int)xb[32];
        acc += ((int)((b >> 2) & 3) - 1) * (int)xb[64];
        acc += ((int)(b & 3) - 1) * (int)xb[96];
    }
    for (int off = 16; off > 0; off >>= 1) acc += __shfl_down_sync(0xffffffff, acc, off);
    if (lane == 0) y[(size_t)t * out + row] = __fmul_rn(__fdiv_rn((float)acc, xs[t]), wscale);
}

// TQ2_0 (ggml): blocks of 256 elements = 66 bytes: qs[64] then an f16 scale d. Element
// 128*h + 32*n + m sits in byte 32*h + m at bits 2*n; code 0/1/2 = -1/0/+1.
// Activations are Q8_K: per 256-block an int8 row and a float scale dx (x = q * dx).
// y[t, r] = sum_blocks (int dot of the block) * d_w * dx[t, block]
__global__ void tq2_0_q8k_gemm(const unsigned char* __restrict__ w, const signed char* __restrict__ xq,
                               const float* __restrict__ xd, float* __restrict__ y, int out, int K) {
    const int lane = threadIdx.x;
    const int row = blockIdx.x * blockDim.y + threadIdx.y;
    const int t = blockIdx.y;
    if (row >= out) return;
    const int nb = K / 256;
    const unsigned char* wr = w + (size_t)row * nb * 66;
    const signed char* xr = xq + (size_t)t * K;
    float sum = 0.0f;
    for (int blk = 0; blk < nb; ++blk) {
        const unsigned char* wb = wr + blk * 66;
        const signed char* xb = xr + blk * 256;
        int acc = 0;
        for (int h = 0; h < 2; ++h) {
            const unsigned int b = wb[32 * h + lane];
            for (int n = 0; n < 4; ++n)
                acc += ((int)((b >> (2 * n)) & 3) - 1) * (int)xb[128 * h + 32 * n + lane];
        }
        for (int off = 16; off > 0; off >>= 1) acc += __shfl_down_sync(0xffffffff, acc, off);
        if (lane == 0) {
            const unsigned short dbits = (unsigned short)wb[64] | ((unsigned short)wb[65] << 8);
            // explicit round-to-nearest ops: no FMA contraction, so the float order is the CPU's
            sum = __fadd_rn(sum, __fmul_rn((float)acc, __fmul_rn(__half2float(__ushort_as_half(dbits)), xd[(size_t)t * nb + blk])));
        }
    }
    if (lane == 0) y[(size_t)t * out + row] = sum;
}

}
