/* bitnet-harness native kernels: ternary GEMM on the packed formats as they sit in the file.
 *
 * Integer parts are exact (int32 accumulation of code x int8 activation); the float steps
 * follow the NumPy reference kernels operation by operation (compiled with
 * -ffp-contract=off, so no fused multiply-add changes a rounding), which makes the results
 * bit-identical to bitnet.kernels.numpy_kernels.
 *
 * Each GEMM returns the variant that ran (1 = AVX2, 0 = scalar) so the dispatcher records the
 * kernel that actually executed. Threads split the output rows (OpenMP): a GEMM called alone
 * opens a parallel region of its own; a transformer block (layer.c) runs its projections' row
 * shares (bn_lin_rows) inside one region per block call.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX2__) || defined(__F16C__)
#include <immintrin.h>
#endif

#if defined(__AVX2__) && (defined(__AVXVNNI__) || (defined(__AVX512VNNI__) && defined(__AVX512VL__)))
#define BN_VNNI 1
#define BN_LEVEL 2
#elif defined(__AVX2__)
#define BN_LEVEL 1
#else
#define BN_LEVEL 0
#endif

/* the variant cap of the dispatcher's entry points: 0 = the best compiled in, 1 = scalar,
 * 2 = AVX2 without VNNI (A/B timing and the tests that check every variant bit for bit) */
static int bn_force_scalar = 0;
void bn_set_force_scalar(int v) { bn_force_scalar = v; }

int bn_has_avx2(void) {
#if defined(__AVX2__)
    return 1;
#else
    return 0;
#endif
}

/* the best variant compiled in: 2 = AVX2 + VNNI (vpdpbusd), 1 = AVX2, 0 = scalar */
int bn_simd_level(void) { return BN_LEVEL; }

/* the variant a call runs under a cap (see bn_set_force_scalar) */
static int bn_pick(int cap) {
    if (cap == 1) return 0;
    if (cap == 2 && BN_LEVEL > 1) return 1;
    return BN_LEVEL;
}

int bn_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

/* this thread's number and its team's size (0 and 1 outside a parallel region, or without OpenMP) */
static inline int bn_tid(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

static inline int bn_nth(void) {
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

/* the contiguous share [*a, *b) of n items that thread tid of nth takes: the split of OpenMP's
 * static schedule without a chunk size. Every row's arithmetic is the same whichever thread
 * takes it, so no split changes a bit. */
static inline void bn_share(int64_t n, int tid, int nth, int64_t *a, int64_t *b) {
    const int64_t q = n / nth, r = n % nth;
    *a = tid * q + (tid < r ? tid : r);
    *b = *a + q + (tid < r ? 1 : 0);
}

static inline float bn_f16_to_f32(uint16_t h) {
#if defined(__F16C__)
    return _cvtsh_ss(h);  /* exact, like the portable path below */
#endif
    const uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else { /* subnormal: normalise */
            exp = 127 - 15 + 1;
            while (!(mant & 0x400)) { mant <<= 1; exp--; }
            mant &= 0x3ff;
            bits = sign | (exp << 23) | (mant << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000 | (mant << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* ---- activation quantizers ------------------------------------------------------------- */

/* bitnet.cpp quantize_row_i8_s: max in double (floor 1e-5), s = (float)(127/max),
 * q = nearest-even(x*s) clamped to [-128, 127], plus the row sum */
void bn_quant_i8_s(const float *x, int64_t T, int64_t K, int8_t *q, float *s, int32_t *sums) {
    for (int64_t t = 0; t < T; t++) {
        const float *xr = x + t * K;
        double mx = 1e-5;
        for (int64_t i = 0; i < K; i++) { double a = fabs((double) xr[i]); if (a > mx) mx = a; }
        const float sc = (float) (127.0 / mx);
        int32_t sum = 0;
        for (int64_t i = 0; i < K; i++) {
            float v = nearbyintf(xr[i] * sc);
            if (v > 127.0f) v = 127.0f;
            if (v < -128.0f) v = -128.0f;
            q[t * K + i] = (int8_t) v;
            sum += (int32_t) v;
        }
        s[t] = sc;
        sums[t] = sum;
    }
}

/* llama.cpp quantize_row_q8_K_ref: per 256-block, max = signed value of largest magnitude
 * (first on ties), iscale = -127/max, q = min(127, nearest(iscale*x)), d = 1/iscale */
void bn_quant_q8k(const float *x, int64_t T, int64_t K, int8_t *q, float *d, int32_t *bsums) {
    const int64_t nb = K / 256;
    for (int64_t t = 0; t < T; t++) {
        for (int64_t b = 0; b < nb; b++) {
            const float *xb = x + t * K + b * 256;
            int8_t *qb = q + t * K + b * 256;
            float amax = 0.0f, mx = 0.0f;
            for (int j = 0; j < 256; j++) { float a = fabsf(xb[j]); if (a > amax) { amax = a; mx = xb[j]; } }
            if (amax == 0.0f) {
                d[t * nb + b] = 0.0f;
                memset(qb, 0, 256);
                for (int g = 0; g < 16; g++) bsums[(t * nb + b) * 16 + g] = 0;
                continue;
            }
            const float iscale = -127.0f / mx;
            for (int j = 0; j < 256; j++) {
                float v = nearbyintf(iscale * xb[j]);
                qb[j] = (int8_t) (v < 127.0f ? v : 127.0f);
            }
            for (int g = 0; g < 16; g++) {
                int32_t s = 0;
                for (int j = 0; j < 16; j++) s += qb[g * 16 + j];
                bsums[(t * nb + b) * 16 + g] = s;
            }
            d[t * nb + b] = 1.0f / iscale;
        }
    }
}

/* ---- I2_S (x86 layout: 128-element blocks, element j in byte j%32 at shift 6-2*(j/32)) --- */

static void i2s_row_scalar(const uint8_t *w, int64_t K, const int8_t *xq, int64_t T, int32_t *acc) {
    for (int64_t t = 0; t < T; t++) acc[t] = 0;
    for (int64_t blk = 0; blk < K / 128; blk++) {
        const uint8_t *wb = w + blk * 32;
        for (int g = 0; g < 4; g++) {
            const int shift = 6 - 2 * g;
            for (int m = 0; m < 32; m++) {
                const int c = ((wb[m] >> shift) & 3) - 1;
                if (!c) continue;
                const int64_t j = blk * 128 + g * 32 + m;
                for (int64_t t = 0; t < T; t++) acc[t] += c * xq[t * K + j];
            }
        }
    }
}

#if defined(BN_VNNI)
/* u8 x s8 products summed four at a time into int32 lanes: exact, no int16 stage */
static inline __m256i bn_dpbusd(__m256i acc, __m256i u8, __m256i s8) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    return _mm256_dpbusd_epi32(acc, u8, s8);
#else
    return _mm256_dpbusd_avx_epi32(acc, u8, s8);
#endif
}
#endif

#if defined(__AVX2__)
static inline int32_t hsum_i32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

/* maddubs gives int16 lanes of code*x pairs, code 0..2 and x in [-128, 127]: each lane in
 * [-512, 508], a block's four in [-2048, 2032], so summing 16 blocks stays within
 * [-32768, 32512]: the int16 accumulator is exact (unlike bitnet.cpp's kernel, which lets it
 * wrap) and is widened to int32 every 16 blocks. Two blocks per iteration, in two
 * accumulators, so the adds of one block do not wait for the other's. */
#define I2S_FLUSH_BLOCKS 16
static inline __attribute__((always_inline)) __m256i i2s_block_avx2(const uint8_t *wb, const int8_t *xb) {
    const __m256i mask = _mm256_set1_epi8(3);
    const __m256i b = _mm256_loadu_si256((const __m256i *) wb);
    const __m256i p0 = _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(b, 6), mask), _mm256_loadu_si256((const __m256i *) xb));
    const __m256i p1 = _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(b, 4), mask), _mm256_loadu_si256((const __m256i *) (xb + 32)));
    const __m256i p2 = _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(b, 2), mask), _mm256_loadu_si256((const __m256i *) (xb + 64)));
    const __m256i p3 = _mm256_maddubs_epi16(_mm256_and_si256(b, mask), _mm256_loadu_si256((const __m256i *) (xb + 96)));
    return _mm256_add_epi16(_mm256_add_epi16(p0, p1), _mm256_add_epi16(p2, p3));
}

static void i2s_row_avx2(const uint8_t *w, int64_t K, const int8_t *xq, const int32_t *xsum, int64_t T, int32_t *acc) {
    const __m256i ones = _mm256_set1_epi16(1);
    const int64_t nb = K / 128;
    for (int64_t t = 0; t < T; t++) {
        __m256i a = _mm256_setzero_si256();
        const int8_t *xr = xq + t * K;
        for (int64_t b0 = 0; b0 < nb; b0 += I2S_FLUSH_BLOCKS) {
            const int64_t b1 = b0 + I2S_FLUSH_BLOCKS < nb ? b0 + I2S_FLUSH_BLOCKS : nb;
            __m256i e = _mm256_setzero_si256(), o = e;  /* even and odd blocks: 8 each at most */
            int64_t blk = b0;
            for (; blk + 2 <= b1; blk += 2) {
                _mm_prefetch((const char *) (w + blk * 32 + 1024), _MM_HINT_T0);
                e = _mm256_add_epi16(e, i2s_block_avx2(w + blk * 32, xr + blk * 128));
                o = _mm256_add_epi16(o, i2s_block_avx2(w + blk * 32 + 32, xr + blk * 128 + 128));
            }
            if (blk < b1) e = _mm256_add_epi16(e, i2s_block_avx2(w + blk * 32, xr + blk * 128));
            a = _mm256_add_epi32(a, _mm256_add_epi32(_mm256_madd_epi16(e, ones), _mm256_madd_epi16(o, ones)));
        }
        acc[t] = hsum_i32(a) - xsum[t];  /* sum((code - 1) * x) */
    }
}

/* the sums of four int32 vectors, one per lane 0..3 of the result */
static inline __m128i hsum4_i32(__m256i a, __m256i b, __m256i c, __m256i d) {
    const __m256i s = _mm256_hadd_epi32(_mm256_hadd_epi32(a, b), _mm256_hadd_epi32(c, d));
    return _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
}

/* four consecutive rows (one contiguous run of 4 * K/4 bytes) against one token (decode): each
 * 128-byte activation block is loaded once for the four rows, each row keeps its own int16
 * accumulator (four independent add chains; 16 blocks stay exact, as in i2s_row_avx2), and the
 * four horizontal sums are one batched reduction. While a group is computed the next group's
 * bytes are prefetched linearly, an equal slice per block (as tq_rows8 does). */
static inline __attribute__((always_inline)) __m128i i2s_rows4_avx2(const uint8_t *w, int64_t K, const int8_t *xr,
                                                                    int prefetch) {
    const __m256i mask = _mm256_set1_epi8(3), ones = _mm256_set1_epi16(1);
    const int64_t nb = K / 128, rb = K / 4;
    const uint8_t *next = w + 4 * rb;
    __m256i a32[4];
    for (int r = 0; r < 4; r++) a32[r] = _mm256_setzero_si256();
    for (int64_t b0 = 0; b0 < nb; b0 += I2S_FLUSH_BLOCKS) {
        const int64_t b1 = b0 + I2S_FLUSH_BLOCKS < nb ? b0 + I2S_FLUSH_BLOCKS : nb;
        __m256i a16[4];
        for (int r = 0; r < 4; r++) a16[r] = _mm256_setzero_si256();
        for (int64_t blk = b0; blk < b1; blk++) {
            if (prefetch) {
                _mm_prefetch((const char *) (next + blk * 128), _MM_HINT_T0);
                _mm_prefetch((const char *) (next + blk * 128 + 64), _MM_HINT_T0);
            }
            const int8_t *xb = xr + blk * 128;
            const __m256i x0 = _mm256_loadu_si256((const __m256i *) xb), x1 = _mm256_loadu_si256((const __m256i *) (xb + 32));
            const __m256i x2 = _mm256_loadu_si256((const __m256i *) (xb + 64)), x3 = _mm256_loadu_si256((const __m256i *) (xb + 96));
            for (int r = 0; r < 4; r++) {
                const __m256i b = _mm256_loadu_si256((const __m256i *) (w + r * rb + blk * 32));
                const __m256i p0 = _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(b, 6), mask), x0);
                const __m256i p1 = _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(b, 4), mask), x1);
                const __m256i p2 = _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(b, 2), mask), x2);
                const __m256i p3 = _mm256_maddubs_epi16(_mm256_and_si256(b, mask), x3);
                a16[r] = _mm256_add_epi16(a16[r], _mm256_add_epi16(_mm256_add_epi16(p0, p1), _mm256_add_epi16(p2, p3)));
            }
        }
        for (int r = 0; r < 4; r++) a32[r] = _mm256_add_epi32(a32[r], _mm256_madd_epi16(a16[r], ones));
    }
    return hsum4_i32(a32[0], a32[1], a32[2], a32[3]);
}

/* one row against four tokens (prefill): the codes of each block are unpacked once and used for
 * the four tokens; per token an int16 accumulator flushed every 16 blocks (exact, as above) */
static inline __attribute__((always_inline)) __m128i i2s_row_x4_avx2(const uint8_t *w, int64_t K, const int8_t *xq) {
    const __m256i mask = _mm256_set1_epi8(3), ones = _mm256_set1_epi16(1);
    const int64_t nb = K / 128;
    __m256i a32[4];
    for (int t = 0; t < 4; t++) a32[t] = _mm256_setzero_si256();
    for (int64_t b0 = 0; b0 < nb; b0 += I2S_FLUSH_BLOCKS) {
        const int64_t b1 = b0 + I2S_FLUSH_BLOCKS < nb ? b0 + I2S_FLUSH_BLOCKS : nb;
        __m256i a16[4];
        for (int t = 0; t < 4; t++) a16[t] = _mm256_setzero_si256();
        for (int64_t blk = b0; blk < b1; blk++) {
            const __m256i b = _mm256_loadu_si256((const __m256i *) (w + blk * 32));
            const __m256i c0 = _mm256_and_si256(_mm256_srli_epi16(b, 6), mask), c1 = _mm256_and_si256(_mm256_srli_epi16(b, 4), mask);
            const __m256i c2 = _mm256_and_si256(_mm256_srli_epi16(b, 2), mask), c3 = _mm256_and_si256(b, mask);
            for (int t = 0; t < 4; t++) {
                const int8_t *xb = xq + t * K + blk * 128;
                const __m256i p0 = _mm256_maddubs_epi16(c0, _mm256_loadu_si256((const __m256i *) xb));
                const __m256i p1 = _mm256_maddubs_epi16(c1, _mm256_loadu_si256((const __m256i *) (xb + 32)));
                const __m256i p2 = _mm256_maddubs_epi16(c2, _mm256_loadu_si256((const __m256i *) (xb + 64)));
                const __m256i p3 = _mm256_maddubs_epi16(c3, _mm256_loadu_si256((const __m256i *) (xb + 96)));
                a16[t] = _mm256_add_epi16(a16[t], _mm256_add_epi16(_mm256_add_epi16(p0, p1), _mm256_add_epi16(p2, p3)));
            }
        }
        for (int t = 0; t < 4; t++) a32[t] = _mm256_add_epi32(a32[t], _mm256_madd_epi16(a16[t], ones));
    }
    return hsum4_i32(a32[0], a32[1], a32[2], a32[3]);
}

/* y[t, r] for rows [r0, r0 + 4) and every token: token tiles of four through i2s_row_x4_avx2,
 * the rest one token at a time through i2s_rows4_avx2 */
static void i2s_group4_avx2(const uint8_t *w, int64_t r0, int64_t out, int64_t K, const int8_t *xq, const float *xs,
                            const int32_t *xsum, int64_t T, float wscale, float *y) {
    const int64_t rb = K / 4;
    int32_t acc[4];
    int64_t t = 0;
    for (; t + 4 <= T; t += 4)
        for (int r = 0; r < 4; r++) {
            _mm_storeu_si128((__m128i *) acc, i2s_row_x4_avx2(w + (r0 + r) * rb, K, xq + t * K));
            for (int j = 0; j < 4; j++) y[(t + j) * out + r0 + r] = ((float) (acc[j] - xsum[t + j]) / xs[t + j]) * wscale;
        }
    for (; t < T; t++) {
        _mm_storeu_si128((__m128i *) acc, i2s_rows4_avx2(w + r0 * rb, K, xq + t * K, T == 1));
        for (int r = 0; r < 4; r++) y[t * out + r0 + r] = ((float) (acc[r] - xsum[t]) / xs[t]) * wscale;
    }
}
#endif

#if defined(BN_VNNI)
/* bytes of weights the I2_S kernels prefetch ahead of the row they read (a linear stream) */
#define I2S_PREFETCH 2048
/* four independent int32 accumulators (one per code shift) keep vpdpbusd's latency hidden */
static void i2s_row_vnni(const uint8_t *w, int64_t K, const int8_t *xq, const int32_t *xsum, int64_t T, int32_t *acc) {
    const __m256i mask = _mm256_set1_epi8(3);
    const int64_t nb = K / 128;
    for (int64_t t = 0; t < T; t++) {
        __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
        const int8_t *xr = xq + t * K;
        for (int64_t blk = 0; blk < nb; blk++) {
            _mm_prefetch((const char *) (w + blk * 32 + I2S_PREFETCH), _MM_HINT_T0);
            const __m256i b = _mm256_loadu_si256((const __m256i *) (w + blk * 32));
            const int8_t *xb = xr + blk * 128;
            a0 = bn_dpbusd(a0, _mm256_and_si256(_mm256_srli_epi16(b, 6), mask), _mm256_loadu_si256((const __m256i *) xb));
            a1 = bn_dpbusd(a1, _mm256_and_si256(_mm256_srli_epi16(b, 4), mask), _mm256_loadu_si256((const __m256i *) (xb + 32)));
            a2 = bn_dpbusd(a2, _mm256_and_si256(_mm256_srli_epi16(b, 2), mask), _mm256_loadu_si256((const __m256i *) (xb + 64)));
            a3 = bn_dpbusd(a3, _mm256_and_si256(b, mask), _mm256_loadu_si256((const __m256i *) (xb + 96)));
        }
        acc[t] = hsum_i32(_mm256_add_epi32(_mm256_add_epi32(a0, a1), _mm256_add_epi32(a2, a3))) - xsum[t];
    }
}

/* four tokens against one row (prefill): the codes of each 32-byte group are unpacked once
 * and used four times */
static void i2s_row_vnni_x4(const uint8_t *w, int64_t K, const int8_t *xq, const int32_t *xsum, int32_t *acc) {
    const __m256i mask = _mm256_set1_epi8(3);
    const int64_t nb = K / 128;
    __m256i a[4], c[4];
    for (int t = 0; t < 4; t++) a[t] = c[t] = _mm256_setzero_si256();
    for (int64_t blk = 0; blk < nb; blk++) {
        _mm_prefetch((const char *) (w + blk * 32 + I2S_PREFETCH), _MM_HINT_T0);
        const __m256i b = _mm256_loadu_si256((const __m256i *) (w + blk * 32));
        const __m256i c0 = _mm256_and_si256(_mm256_srli_epi16(b, 6), mask), c1 = _mm256_and_si256(_mm256_srli_epi16(b, 4), mask);
        const __m256i c2 = _mm256_and_si256(_mm256_srli_epi16(b, 2), mask), c3 = _mm256_and_si256(b, mask);
        for (int t = 0; t < 4; t++) {
            const int8_t *xb = xq + t * K + blk * 128;
            a[t] = bn_dpbusd(a[t], c0, _mm256_loadu_si256((const __m256i *) xb));
            c[t] = bn_dpbusd(c[t], c1, _mm256_loadu_si256((const __m256i *) (xb + 32)));
            a[t] = bn_dpbusd(a[t], c2, _mm256_loadu_si256((const __m256i *) (xb + 64)));
            c[t] = bn_dpbusd(c[t], c3, _mm256_loadu_si256((const __m256i *) (xb + 96)));
        }
    }
    for (int t = 0; t < 4; t++) acc[t] = hsum_i32(_mm256_add_epi32(a[t], c[t])) - xsum[t];
}
#endif

/* y[t, r] = (sum_j (code-1) x_tj) / s_t * wscale for one row r and every token, in the variant
 * asked for (the whole GEMM for scalar and VNNI; the rows after the AVX2 groups of four) */
static void i2s_one_row(int variant, const uint8_t *w, int64_t r, int64_t out, int64_t K, const int8_t *xq,
                        const float *xs, const int32_t *xsum, int64_t T, float wscale, float *y) {
    int32_t acc[64];
    for (int64_t t0 = 0; t0 < T; t0 += 64) {
        const int64_t tn = T - t0 < 64 ? T - t0 : 64;
#if defined(BN_VNNI)
        if (variant == 2) {
            int64_t t = 0;
            for (; t + 4 <= tn; t += 4) i2s_row_vnni_x4(w + r * (K / 4), K, xq + (t0 + t) * K, xsum + t0 + t, acc + t);
            if (t < tn) i2s_row_vnni(w + r * (K / 4), K, xq + (t0 + t) * K, xsum + t0 + t, tn - t, acc + t);
        } else
#endif
#if defined(__AVX2__)
        if (variant == 1) i2s_row_avx2(w + r * (K / 4), K, xq + t0 * K, xsum + t0, tn, acc);
        else
#endif
        i2s_row_scalar(w + r * (K / 4), K, xq + t0 * K, tn, acc);
        for (int64_t t = 0; t < tn; t++) y[(t0 + t) * out + r] = ((float) acc[t] / xs[t0 + t]) * wscale;
    }
}

/* thread tid's share of an I2_S GEMM's rows (groups of four on AVX2, then the rows left over) */
static void i2s_rows(int variant, const uint8_t *w, int64_t out, int64_t K, const int8_t *xq, const float *xs,
                     const int32_t *xsum, int64_t T, float wscale, float *y, int tid, int nth) {
    int64_t a, b;
#if defined(__AVX2__)
    if (variant == 1) {
        const int64_t g4 = out / 4;
        bn_share(g4, tid, nth, &a, &b);
        for (int64_t g = a; g < b; g++) i2s_group4_avx2(w, 4 * g, out, K, xq, xs, xsum, T, wscale, y);
        bn_share(out - 4 * g4, tid, nth, &a, &b);
        for (int64_t r = 4 * g4 + a; r < 4 * g4 + b; r++) i2s_one_row(variant, w, r, out, K, xq, xs, xsum, T, wscale, y);
        return;
    }
#endif
    bn_share(out, tid, nth, &a, &b);
    for (int64_t r = a; r < b; r++) i2s_one_row(variant, w, r, out, K, xq, xs, xsum, T, wscale, y);
}

static int i2s_gemm(const uint8_t *w, int64_t out, int64_t K, const int8_t *xq, const float *xs, const int32_t *xsum,
                    int64_t T, float wscale, float *y, int threads, int cap) {
    const int variant = bn_pick(cap);
    #pragma omp parallel num_threads(threads) if(threads > 1)
    i2s_rows(variant, w, out, K, xq, xs, xsum, T, wscale, y, bn_tid(), bn_nth());
    return variant;
}

int bn_gemm_i2s(const uint8_t *w, int64_t out, int64_t K, const int8_t *xq, const float *xs, const int32_t *xsum,
                int64_t T, float wscale, float *y, int threads) {
    return i2s_gemm(w, out, K, xq, xs, xsum, T, wscale, y, threads, bn_force_scalar);
}

/* ---- TQ2_0 / TQ1_0 x Q8_K: per block an exact int dot, then sumf += acc * (dx * dw) ------ */

/* codes (0..2) of one TQ2_0 block in element order */
static inline void tq2_codes(const uint8_t *qs, uint8_t *c) {
    for (int h = 0; h < 2; h++)
        for (int n = 0; n < 4; n++)
            for (int m = 0; m < 32; m++) c[128 * h + 32 * n + m] = (qs[32 * h + m] >> (2 * n)) & 3;
}

static uint8_t bn_pow3_lut[256][5];
static int bn_pow3_ready = 0;

static void tq1_init(void) {
    if (bn_pow3_ready) return;
    static const uint8_t pow3[5] = {1, 3, 9, 27, 81};
    for (int b = 0; b < 256; b++)
        for (int l = 0; l < 5; l++) {
            const uint8_t q = (uint8_t) (b * pow3[l]);
            bn_pow3_lut[b][l] = (uint8_t) (((uint16_t) q * 3) >> 8);
        }
    bn_pow3_ready = 1;
}

static inline void tq1_codes(const uint8_t *blk, uint8_t *c) {
    for (int l = 0; l < 5; l++)
        for (int m = 0; m < 32; m++) c[m + 32 * l] = bn_pow3_lut[blk[m]][l];
    for (int l = 0; l < 5; l++)
        for (int m = 0; m < 16; m++) c[160 + m + 16 * l] = bn_pow3_lut[blk[32 + m]][l];
    for (int l = 0; l < 4; l++)
        for (int j = 0; j < 4; j++) c[240 + j + 4 * l] = bn_pow3_lut[blk[48 + j]][l];
}

/* sum((code - 1) * x) over one block of decoded codes; xs = sum(x) of the block (from bsums) */
static inline int32_t block_dot(const uint8_t *c, const int8_t *x, int32_t xs) {
    int32_t s = 0;
    for (int i = 0; i < 256; i++) s += (int) c[i] * x[i];
    return s - xs;
}

#if defined(__AVX2__)
/* bytes times 3 and times 9, modulo 256, in shifts and adds (AVX2 has no 8-bit multiply; a
 * 16-bit shift carries the low byte's top bits into the high byte, which the 0xf8 mask drops):
 * the same integers as a byte multiply, so the digits are unchanged, in 2-3 instructions
 * instead of the 8 of a general per-byte multiply (ggml's TQ1_0 kernel does the same) */
static inline __m256i mul3_u8(__m256i q) { return _mm256_add_epi8(q, _mm256_add_epi8(q, q)); }
static inline __m256i mul9_u8(__m256i q) {
    return _mm256_add_epi8(_mm256_and_si256(_mm256_slli_epi16(q, 3), _mm256_set1_epi8((char) 0xf8)), q);
}

/* base-3 digit of a TQ1_0 byte already multiplied by 3^l: (q * 3) >> 8 = (q >= 86) + (q >= 171) */
static inline __m256i trit_u8(__m256i q) {
    const __m256i one = _mm256_set1_epi8(1);
    return _mm256_add_epi8(_mm256_min_epu8(_mm256_subs_epu8(q, _mm256_set1_epi8(85)), one),
                           _mm256_min_epu8(_mm256_subs_epu8(q, _mm256_set1_epi8((char) 170)), one));
}

/* horizontal sums of 8 vectors at once: lane i of the result = sum of v[i]'s lanes */
static inline __m256i hsum8_i32(const __m256i v[8]) {
    const __m256i s01 = _mm256_hadd_epi32(v[0], v[1]), s23 = _mm256_hadd_epi32(v[2], v[3]);
    const __m256i s45 = _mm256_hadd_epi32(v[4], v[5]), s67 = _mm256_hadd_epi32(v[6], v[7]);
    const __m256i s0123 = _mm256_hadd_epi32(s01, s23), s4567 = _mm256_hadd_epi32(s45, s67);
    const __m256i lo = _mm256_permute2x128_si256(s0123, s4567, 0x20), hi = _mm256_permute2x128_si256(s0123, s4567, 0x31);
    return _mm256_add_epi32(lo, hi);
}

/* the 2-bit codes (0..2) of one block as eight vectors, code vector i pairing with activations
 * x[32i, 32i + 32): TQ2_0 byte 32h+m holds element 128h+32n+m at bits 2n; TQ1_0 qs[0..32) hold
 * elements 32l+m (l = 0..4), qs[32..48) hold 160+16l+m, qh[0..4) hold 240+4l+j */
static inline __attribute__((always_inline)) void tq_codes8(int tq1, const uint8_t *blk, __m256i c[8]) {
    const __m256i mask = _mm256_set1_epi8(3);
    if (!tq1) {
        for (int h = 0; h < 2; h++) {
            const __m256i b = _mm256_loadu_si256((const __m256i *) (blk + 32 * h));
            c[4 * h] = _mm256_and_si256(b, mask);
            c[4 * h + 1] = _mm256_and_si256(_mm256_srli_epi16(b, 2), mask);
            c[4 * h + 2] = _mm256_and_si256(_mm256_srli_epi16(b, 4), mask);
            c[4 * h + 3] = _mm256_and_si256(_mm256_srli_epi16(b, 6), mask);
        }
        return;
    }
    const __m256i q0 = _mm256_loadu_si256((const __m256i *) blk);
    const __m128i q1 = _mm_loadu_si128((const __m128i *) (blk + 32));
    uint32_t qh;
    memcpy(&qh, blk + 48, 4);
    const __m256i q11 = _mm256_broadcastsi128_si256(q1);
    const __m256i qlast = _mm256_inserti128_si256(_mm256_castsi128_si256(q1), _mm_set1_epi32((int) qh), 1);
    /* q0 times 3^l for l = 0..4 */
    const __m256i q3 = mul3_u8(q0), q9 = mul9_u8(q0);
    c[0] = trit_u8(q0);
    c[1] = trit_u8(q3);
    c[2] = trit_u8(q9);
    c[3] = trit_u8(mul9_u8(q3));
    c[4] = trit_u8(mul9_u8(q9));
    /* qs[32..48) times 1 | 3 (lower | upper 16 bytes) and 9 | 27 */
    const __m256i h3 = mul3_u8(q11);
    c[5] = trit_u8(_mm256_blend_epi32(q11, h3, 0xf0));
    c[6] = trit_u8(_mm256_blend_epi32(mul9_u8(q11), mul9_u8(h3), 0xf0));
    /* qs[32..48) times 81 in dwords 0-3; qh (broadcast) times 1, 3, 9, 27 in dwords 4, 5, 6, 7 */
    const __m256i l3 = mul3_u8(qlast), l9 = mul9_u8(qlast);
    __m256i l = _mm256_blend_epi32(mul9_u8(l9), qlast, 0x10);
    l = _mm256_blend_epi32(l, l3, 0x20);
    l = _mm256_blend_epi32(l, l9, 0x40);
    c[7] = trit_u8(_mm256_blend_epi32(l, mul9_u8(l3), 0x80));
}

/* the un-reduced int32 lanes of sum(code * x) over one block of decoded codes */
static inline __attribute__((always_inline)) __m256i tq_dot8(int vnni, const __m256i c[8], const int8_t *x) {
#if defined(BN_VNNI)
    if (vnni) {
        __m256i a = _mm256_setzero_si256(), b = _mm256_setzero_si256();
        for (int i = 0; i < 8; i += 2) {
            a = bn_dpbusd(a, c[i], _mm256_loadu_si256((const __m256i *) (x + 32 * i)));
            b = bn_dpbusd(b, c[i + 1], _mm256_loadu_si256((const __m256i *) (x + 32 * i + 32)));
        }
        return _mm256_add_epi32(a, b);
    }
#else
    (void) vnni;
#endif
    __m256i a16 = _mm256_setzero_si256();  /* 8 maddubs of |lane| <= 512: exact in int16 */
    for (int i = 0; i < 8; i++)
        a16 = _mm256_add_epi16(a16, _mm256_maddubs_epi16(c[i], _mm256_loadu_si256((const __m256i *) (x + 32 * i))));
    return _mm256_madd_epi16(a16, _mm256_set1_epi16(1));
}

/* the un-reduced int32 lanes of one block (sum(code * x)) in the variant asked for; with a
 * constant `vnni` the branch folds away where this is inlined */
static inline __attribute__((always_inline)) __m256i tq_lanes(int tq1, int vnni, const uint8_t *blk, const int8_t *x) {
    __m256i c[8];
    tq_codes8(tq1, blk, c);
    return tq_dot8(vnni, c, x);
}

/* the f16 block scales of eight rows (row stride rb) at byte offset off, as eight floats */
static inline __attribute__((always_inline)) __m256 tq_scales8(const uint8_t *g, int64_t rb, int64_t off) {
    uint16_t h[8];
    for (int j = 0; j < 8; j++) memcpy(&h[j], g + j * rb + off, 2);
#if defined(__F16C__)  /* in a register: a store of eight floats and a vector reload would stall */
    return _mm256_cvtph_ps(_mm_setr_epi16((short) h[0], (short) h[1], (short) h[2], (short) h[3],
                                          (short) h[4], (short) h[5], (short) h[6], (short) h[7]));
#else
    float f[8];
    for (int j = 0; j < 8; j++) f[j] = bn_f16_to_f32(h[j]);
    return _mm256_loadu_ps(f);
#endif
}

/* eight output rows at once: the integer dot of each row's block goes into one lane of a
 * batched horizontal sum, and the float accumulation runs in eight float lanes, one row per
 * lane, block after block: per row exactly the reference's order of operations
 * (sumf = sumf + f32(sumi) * (d_x * d_w)), without a scalar dependency chain.
 *
 * The eight rows are one contiguous run of 8 * row-bytes; while it is computed, the next
 * group's run is prefetched linearly, an equal slice per block, so DRAM reads overlap the
 * arithmetic (eight short per-row streams are more than the hardware prefetcher follows
 * well: without this, cold-cache time was the sum of compute and transfer time). */
static inline __attribute__((always_inline)) void tq_rows8(int tq1, int vnni, const uint8_t *w, int64_t r0, int64_t out,
                                                          int64_t K, const int8_t *xq, const float *xd, const int32_t *xsb,
                                                          int64_t T, float *y) {
    const int64_t nb = K / 256, bb = tq1 ? 54 : 66, rb = nb * bb;
    const uint8_t *g = w + r0 * rb, *next = g + 8 * rb;
    for (int64_t t = 0; t < T; t++) {
        const int8_t *xr = xq + t * K;
        __m256 sum = _mm256_setzero_ps();
        for (int64_t b = 0; b < nb; b++) {
            if (t == 0)
                for (int64_t i = 0; i < 8 * bb; i += 64) _mm_prefetch((const char *) (next + b * 8 * bb + i), _MM_HINT_T0);
            __m256i lanes[8];
            for (int j = 0; j < 8; j++) lanes[j] = tq_lanes(tq1, vnni, g + j * rb + b * bb, xr + b * 256);
            const __m256 dw = tq_scales8(g, rb, b * bb + bb - 2);
            const __m256i acc = _mm256_sub_epi32(hsum8_i32(lanes), _mm256_set1_epi32(xsb[t * nb + b]));
            const __m256 d = _mm256_mul_ps(_mm256_set1_ps(xd[t * nb + b]), dw);
            sum = _mm256_add_ps(sum, _mm256_mul_ps(_mm256_cvtepi32_ps(acc), d));
        }
        _mm256_storeu_ps(y + t * out + r0, sum);
    }
}

/* eight rows x TT tokens (prefill): each block's codes are decoded once and used for TT tokens
 * (the decode is most of TQ1_0's work and a third of TQ2_0's); per (token, row) the float
 * steps are exactly those of tq_rows8 */
#define TQ_TILE 4
static inline __attribute__((always_inline)) void tq_rows8_tile(int tq1, int vnni, const uint8_t *w, int64_t r0,
                                                               int64_t out, int64_t K, const int8_t *xq, const float *xd,
                                                               const int32_t *xsb, int64_t t0, float *y) {
    const int64_t nb = K / 256, bb = tq1 ? 54 : 66, rb = nb * bb;
    const uint8_t *g = w + r0 * rb, *next = g + 8 * rb;
    __m256 sum[TQ_TILE];
    for (int t = 0; t < TQ_TILE; t++) sum[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        if (t0 == 0)  /* the next group's bytes, as in tq_rows8 */
            for (int64_t i = 0; i < 8 * bb; i += 64) _mm_prefetch((const char *) (next + b * 8 * bb + i), _MM_HINT_T0);
        /* rows in pairs, each pair folded at once (the first step of hsum8_i32), so only four
         * vectors per token stay live instead of eight */
        __m256i pair[TQ_TILE][4];
        for (int j = 0; j < 8; j += 2) {
            __m256i c[8], a[TQ_TILE];
            tq_codes8(tq1, g + j * rb + b * bb, c);
            for (int t = 0; t < TQ_TILE; t++) a[t] = tq_dot8(vnni, c, xq + (t0 + t) * K + b * 256);
            tq_codes8(tq1, g + (j + 1) * rb + b * bb, c);
            for (int t = 0; t < TQ_TILE; t++) pair[t][j / 2] = _mm256_hadd_epi32(a[t], tq_dot8(vnni, c, xq + (t0 + t) * K + b * 256));
        }
        const __m256 dw = tq_scales8(g, rb, b * bb + bb - 2);
        for (int t = 0; t < TQ_TILE; t++) {
            const __m256i s0123 = _mm256_hadd_epi32(pair[t][0], pair[t][1]), s4567 = _mm256_hadd_epi32(pair[t][2], pair[t][3]);
            const __m256i h8 = _mm256_add_epi32(_mm256_permute2x128_si256(s0123, s4567, 0x20),
                                                _mm256_permute2x128_si256(s0123, s4567, 0x31));  /* = hsum8_i32 */
            const __m256i acc = _mm256_sub_epi32(h8, _mm256_set1_epi32(xsb[(t0 + t) * nb + b]));
            const __m256 d = _mm256_mul_ps(_mm256_set1_ps(xd[(t0 + t) * nb + b]), dw);
            sum[t] = _mm256_add_ps(sum[t], _mm256_mul_ps(_mm256_cvtepi32_ps(acc), d));
        }
    }
    for (int t = 0; t < TQ_TILE; t++) _mm256_storeu_ps(y + (t0 + t) * out + r0, sum[t]);
}

/* one row x eight tokens (prefill, AVX2 without VNNI): the block's codes are decoded once into
 * eight registers and used for eight tokens, whose eight dot products go through one batched
 * horizontal sum (built pairwise as they come, so few vectors stay live); the float accumulation
 * runs with one token per lane, block after block: per (row, token) exactly the reference's
 * sumf = sumf + f32(sumi) * (d_x * d_w). xdT / xsbT: the activations' block scales and sums,
 * transposed to [block][token] so eight tokens' values are one load. */
#define TQ_TT 8
static inline __attribute__((always_inline)) void tq_row_t8(int tq1, const uint8_t *w, int64_t r, int64_t out,
                                                           int64_t K, const int8_t *xq, const float *xdT,
                                                           const int32_t *xsbT, int64_t t0, int64_t T, float *y) {
    const int64_t nb = K / 256, bb = tq1 ? 54 : 66;
    const uint8_t *row = w + r * nb * bb;
    __m256 sum = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        __m256i c[8];
        tq_codes8(tq1, row + b * bb, c);
        const int8_t *x = xq + t0 * K + b * 256;
        const __m256i q0 = _mm256_hadd_epi32(_mm256_hadd_epi32(tq_dot8(0, c, x), tq_dot8(0, c, x + K)),
                                             _mm256_hadd_epi32(tq_dot8(0, c, x + 2 * K), tq_dot8(0, c, x + 3 * K)));
        const __m256i q1 = _mm256_hadd_epi32(_mm256_hadd_epi32(tq_dot8(0, c, x + 4 * K), tq_dot8(0, c, x + 5 * K)),
                                             _mm256_hadd_epi32(tq_dot8(0, c, x + 6 * K), tq_dot8(0, c, x + 7 * K)));
        const __m256i h8 = _mm256_add_epi32(_mm256_permute2x128_si256(q0, q1, 0x20),
                                            _mm256_permute2x128_si256(q0, q1, 0x31));  /* = hsum8_i32 */
        uint16_t dbits;
        memcpy(&dbits, row + b * bb + bb - 2, 2);
        const __m256i acc = _mm256_sub_epi32(h8, _mm256_loadu_si256((const __m256i *) (xsbT + b * T + t0)));
        const __m256 d = _mm256_mul_ps(_mm256_loadu_ps(xdT + b * T + t0), _mm256_set1_ps(bn_f16_to_f32(dbits)));
        sum = _mm256_add_ps(sum, _mm256_mul_ps(_mm256_cvtepi32_ps(acc), d));
    }
    float s[8];
    _mm256_storeu_ps(s, sum);
    for (int t = 0; t < 8; t++) y[(t0 + t) * out + r] = s[t];
}

/* one group of eight rows for all T tokens: tiles of TQ_TILE tokens, the rest one by one */
static inline __attribute__((always_inline)) void tq_group8(int tq1, int vnni, const uint8_t *w, int64_t r0, int64_t out,
                                                           int64_t K, const int8_t *xq, const float *xd, const int32_t *xsb,
                                                           const float *xdT, const int32_t *xsbT, int64_t T, float *y) {
    const int64_t nb = K / 256;
    int64_t t0 = 0;
    if (!vnni && xdT)
        for (; t0 + TQ_TT <= T; t0 += TQ_TT)
            for (int64_t j = 0; j < 8; j++) tq_row_t8(tq1, w, r0 + j, out, K, xq, xdT, xsbT, t0, T, y);
    for (; t0 + TQ_TILE <= T; t0 += TQ_TILE) tq_rows8_tile(tq1, vnni, w, r0, out, K, xq, xd, xsb, t0, y);
    if (t0 < T) tq_rows8(tq1, vnni, w, r0, out, K, xq + t0 * K, xd + t0 * nb, xsb + t0 * nb, T - t0, y + t0 * out);
}

/* one row (the rows left over after the groups of eight), blocks eight at a time */
static inline __attribute__((always_inline)) void tq_row1(int tq1, int vnni, const uint8_t *w, int64_t r, int64_t K,
                                                         const int8_t *xq, const float *xd, const int32_t *xsb,
                                                         int64_t T, int64_t out, float *y) {
    const int64_t nb = K / 256, bb = tq1 ? 54 : 66;
    for (int64_t t = 0; t < T; t++) {
        const int8_t *xr = xq + t * K;
        float sum = 0.0f;
        int64_t b = 0;
        for (; b + 8 <= nb; b += 8) {
            __m256i lanes[8];
            for (int j = 0; j < 8; j++) lanes[j] = tq_lanes(tq1, vnni, w + (r * nb + b + j) * bb, xr + (b + j) * 256);
            int32_t acc[8];
            _mm256_storeu_si256((__m256i *) acc, hsum8_i32(lanes));
            for (int j = 0; j < 8; j++) {
                uint16_t dbits;
                memcpy(&dbits, w + (r * nb + b + j) * bb + bb - 2, 2);
                const float d = xd[t * nb + b + j] * bn_f16_to_f32(dbits);
                sum = sum + (float) (acc[j] - xsb[t * nb + b + j]) * d;
            }
        }
        for (; b < nb; b++) {
            const uint8_t *blk = w + (r * nb + b) * bb;
            uint16_t dbits;
            memcpy(&dbits, blk + bb - 2, 2);
            const float d = xd[t * nb + b] * bn_f16_to_f32(dbits);
            sum = sum + (float) (hsum_i32(tq_lanes(tq1, vnni, blk, xr + b * 256)) - xsb[t * nb + b]) * d;
        }
        y[t * out + r] = sum;
    }
}

/* thread tid's share of the SIMD variants' rows: the groups of eight, then the rows left over */
static void tq_simd_rows(int tq1, int vnni, const uint8_t *w, int64_t out, int64_t K, const int8_t *xq, const float *xd,
                         const int32_t *xsb, const float *xdT, const int32_t *xsbT, int64_t T, float *y, int tid, int nth) {
    const int64_t r8 = out / 8 * 8, nb = K / 256;
    int64_t a, b;
    bn_share(out / 8, tid, nth, &a, &b);
    if (vnni) {
        for (int64_t g = a; g < b; g++) tq_group8(tq1, 1, w, 8 * g, out, K, xq, xd, xsb, NULL, NULL, T, y);
        bn_share(out - r8, tid, nth, &a, &b);
        for (int64_t r = r8 + a; r < r8 + b; r++) tq_row1(tq1, 1, w, r, K, xq, xd, xsb, T, out, y);
        return;
    }
    for (int64_t g = a; g < b; g++) tq_group8(tq1, 0, w, 8 * g, out, K, xq, xd, xsb, xdT, xsbT, T, y);
    bn_share(out - r8, tid, nth, &a, &b);
    for (int64_t r = r8 + a; r < r8 + b; r++) {
        int64_t t0 = 0;
        if (xdT)
            for (; t0 + TQ_TT <= T; t0 += TQ_TT) tq_row_t8(tq1, w, r, out, K, xq, xdT, xsbT, t0, T, y);
        if (t0 < T) tq_row1(tq1, 0, w, r, K, xq + t0 * K, xd + t0 * nb, xsb + t0 * nb, T - t0, out, y + t0 * out);
    }
}
#endif

/* ---- one projection call in three parts -------------------------------------------------
 * bn_lin_prep (one thread: the activations quantized, unless given, and the per-block sums the
 * rows share), bn_lin_rows (each thread of a team its share of the output rows), bn_lin_free.
 * A standalone GEMM runs the rows in a parallel region of its own; a transformer block
 * (layer.c) runs several projections' rows inside one region, so its threads are woken once
 * per block call instead of once per projection. */
typedef struct {
    int fmt, variant, own;    /* fmt: bn_linear's; own: q, s, sums allocated here */
    const uint8_t *w;
    int64_t out, K, T;
    float wscale, *y;
    int8_t *q;
    float *s;                 /* I2_S: per-token scales; TQ: the Q8_K block scales */
    int32_t *sums;            /* I2_S: per-token sums; TQ: the Q8_K bsums */
    int32_t *xsb;             /* TQ: per (token, block) activation sums, from the bsums */
    float *xdT;               /* TQ, AVX2 eight-token tiles: block scales and sums as [block][token] */
    int32_t *xsbT;
} bn_lin;

static void bn_lin_free(bn_lin *L) {
    if (L->own) { free(L->q); free(L->s); free(L->sums); }
    free(L->xsb); free(L->xdT); free(L->xsbT);
    L->q = NULL; L->s = NULL; L->sums = NULL; L->xsb = NULL; L->xdT = NULL; L->xsbT = NULL;
}

/* the shared part of a call whose activations are quantized already: 0, or -1 (out of memory;
 * nothing left allocated) */
static int bn_lin_init(bn_lin *L, int fmt, const uint8_t *w, int64_t out, int64_t K, int64_t T, float wscale,
                       float *y, int cap) {
    L->fmt = fmt; L->variant = bn_pick(cap); L->w = w; L->out = out; L->K = K; L->T = T; L->wscale = wscale; L->y = y;
    L->xsb = NULL; L->xdT = NULL; L->xsbT = NULL;
    if (fmt == 0) return 0;
    if (fmt == 2) tq1_init();
    const int64_t nb = K / 256;
    /* per (t, block) sum of the activations, from Q8_K's bsums, once for all rows */
    L->xsb = (int32_t *) malloc(sizeof(int32_t) * (size_t) (T * nb));
    if (!L->xsb) return -1;
    for (int64_t i = 0; i < T * nb; i++) {
        int32_t acc = 0;
        for (int g = 0; g < 16; g++) acc += L->sums[i * 16 + g];
        L->xsb[i] = acc;
    }
#if defined(__AVX2__)
    if (L->variant == 1 && T >= TQ_TT) {  /* the eight-token tiles read the block scales and sums per block */
        L->xdT = (float *) malloc(sizeof(float) * (size_t) (T * nb));
        L->xsbT = (int32_t *) malloc(sizeof(int32_t) * (size_t) (T * nb));
        if (!L->xdT || !L->xsbT) return -1;
        for (int64_t t = 0; t < T; t++)
            for (int64_t b = 0; b < nb; b++) { L->xdT[b * T + t] = L->s[t * nb + b]; L->xsbT[b * T + t] = L->xsb[t * nb + b]; }
    }
#endif
    return 0;
}

/* one TQ row, scalar: per block an exact int dot, then sumf += acc * (dx * dw) */
static void tq_scalar_row(int tq1, const uint8_t *w, int64_t r, int64_t out, int64_t K, const int8_t *xq,
                          const float *xd, const int32_t *xsb, int64_t T, float *y) {
    const int64_t nb = K / 256, bb = tq1 ? 54 : 66;
    uint8_t codes[256];
    float sum[64];
    for (int64_t t0 = 0; t0 < T; t0 += 64) {
        const int64_t tn = T - t0 < 64 ? T - t0 : 64;
        for (int64_t t = 0; t < tn; t++) sum[t] = 0.0f;
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t *blk = w + (r * nb + b) * bb;
            if (tq1) tq1_codes(blk, codes); else tq2_codes(blk, codes);
            uint16_t dbits;
            memcpy(&dbits, blk + bb - 2, 2);
            const float dw = bn_f16_to_f32(dbits);
            for (int64_t t = 0; t < tn; t++) {
                const int32_t acc = block_dot(codes, xq + (t0 + t) * K + b * 256, xsb[(t0 + t) * nb + b]);
                const float d = xd[(t0 + t) * nb + b] * dw;
                sum[t] = sum[t] + (float) acc * d;
            }
        }
        for (int64_t t = 0; t < tn; t++) y[(t0 + t) * out + r] = sum[t];
    }
}

/* thread tid's share of the call's output rows */
static void bn_lin_rows(const bn_lin *L, int tid, int nth) {
    if (L->fmt == 0) {
        i2s_rows(L->variant, L->w, L->out, L->K, L->q, L->s, L->sums, L->T, L->wscale, L->y, tid, nth);
        return;
    }
    const int tq1 = L->fmt == 2;
#if defined(__AVX2__)
    if (L->variant) {
        tq_simd_rows(tq1, L->variant == 2, L->w, L->out, L->K, L->q, L->s, L->xsb, L->xdT, L->xsbT, L->T, L->y, tid, nth);
        return;
    }
#endif
    int64_t a, b;
    bn_share(L->out, tid, nth, &a, &b);
    for (int64_t r = a; r < b; r++) tq_scalar_row(tq1, L->w, r, L->out, L->K, L->q, L->s, L->xsb, L->T, L->y);
}

/* the rows of a prepared call on `threads` threads, in a parallel region of its own */
static void bn_lin_run(const bn_lin *L, int threads) {
    #pragma omp parallel num_threads(threads) if(threads > 1)
    bn_lin_rows(L, bn_tid(), bn_nth());
}

static int tq_gemm(int tq1, const uint8_t *w, int64_t out, int64_t K, const int8_t *xq, const float *xd,
                   const int32_t *bsums, int64_t T, float *y, int threads, int cap) {
    bn_lin L = {0};
    L.q = (int8_t *) xq; L.s = (float *) xd; L.sums = (int32_t *) bsums;
    int v = bn_lin_init(&L, tq1 ? 2 : 1, w, out, K, T, 0.0f, y, cap);
    if (v == 0) { bn_lin_run(&L, threads); v = L.variant; }
    bn_lin_free(&L);
    return v;
}

int bn_gemm_tq2_q8k(const uint8_t *w, int64_t out, int64_t K, const int8_t *xq, const float *xd,
                    const int32_t *bsums, int64_t T, float *y, int threads) {
    return tq_gemm(0, w, out, K, xq, xd, bsums, T, y, threads, bn_force_scalar);
}

int bn_gemm_tq1_q8k(const uint8_t *w, int64_t out, int64_t K, const int8_t *xq, const float *xd,
                    const int32_t *bsums, int64_t T, float *y, int threads) {
    return tq_gemm(1, w, out, K, xq, xd, bsums, T, y, threads, bn_force_scalar);
}

/* ---- F16 weights x float activations (the lm_head against token_embd) -------------------
 * Not bit-identical to NumPy's BLAS (the summation order differs); its tests use a tolerance. */
#define F16_PREFETCH 512  /* elements (1 KiB) ahead. On the AVX2-only EPYC VM (2026-12-02), the 2B-4T lm_head at 2 threads took 22-23 ms at 128-512, 23-26 ms with no software prefetch and 27-29 ms at 2048 (4 KiB, the earlier setting) */
int bn_gemm_f16(const uint16_t *w, int64_t rows, int64_t K, const float *x, int64_t T, float *y, int threads) {
    int variant = 0;
#if defined(__AVX2__) && defined(__F16C__) && defined(__FMA__)
    variant = bn_pick(bn_force_scalar) ? 1 : 0;
#endif
    #pragma omp parallel for num_threads(threads) schedule(static) if(threads > 1)
    for (int64_t r = 0; r < rows; r++) {
        const uint16_t *wr = w + r * K;
        for (int64_t t = 0; t < T; t++) {
            const float *xr = x + t * K;
            float s = 0.0f;
            int64_t i = 0;
#if defined(__AVX2__) && defined(__F16C__) && defined(__FMA__)
            if (variant) {
                __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = a0, a3 = a0;
                for (; i + 32 <= K; i += 32) {
                    if (t == 0) {  /* a linear stream: rows are contiguous */
                        _mm_prefetch((const char *) (wr + i + F16_PREFETCH), _MM_HINT_T0);
                    }
                    a0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) (wr + i))), _mm256_loadu_ps(xr + i), a0);
                    a1 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) (wr + i + 8))), _mm256_loadu_ps(xr + i + 8), a1);
                    a2 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) (wr + i + 16))), _mm256_loadu_ps(xr + i + 16), a2);
                    a3 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) (wr + i + 24))), _mm256_loadu_ps(xr + i + 24), a3);
                }
                for (; i + 8 <= K; i += 8)
                    a0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) (wr + i))), _mm256_loadu_ps(xr + i), a0);
                __m256 a = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
                __m128 h = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
                h = _mm_add_ps(h, _mm_movehl_ps(h, h));
                h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
                s = _mm_cvtss_f32(h);
            }
#endif
            for (; i < K; i++) s += bn_f16_to_f32(wr[i]) * xr[i];
            y[t * rows + r] = s;
        }
    }
    return variant;
}

/* ---- RMSNorm, bit-identical to bitnet.model.ops.rms_norm (NumPy) ------------------------
 * NumPy sums float64 with its pairwise summation (8 accumulators per block of at most 128,
 * halving above that at multiples of 8: pairwise_sum in numpy/_core/src/umath/loops_utils.h.src),
 * starting from the add identity 0.0; the rest is element-wise IEEE arithmetic in the same order:
 * mean = sum / D (double), m = (float)(mean + eps), scale = 1.0f / sqrtf(m),
 * y = (x * scale) * w in float. */
static double bn_pairwise_sum(const double *a, int64_t n) {
    if (n < 8) {
        double res = 0.;
        for (int64_t i = 0; i < n; i++) res += a[i];
        return res;
    }
    if (n <= 128) {
        double r[8];
        for (int j = 0; j < 8; j++) r[j] = a[j];
        int64_t i;
        for (i = 8; i < n - (n % 8); i += 8)
            for (int j = 0; j < 8; j++) r[j] += a[i + j];
        double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for (; i < n; i++) res += a[i];
        return res;
    }
    int64_t n2 = n / 2;
    n2 -= n2 % 8;
    return bn_pairwise_sum(a, n2) + bn_pairwise_sum(a + n2, n - n2);
}

/* y[T, D] = rms_norm(x[T, D]) * w[D]; returns 0, or -1 when out of memory */
int bn_rms_norm(const float *x, int64_t T, int64_t D, const float *w, double eps, float *y) {
    double *sq = (double *) malloc(sizeof(double) * (size_t) (D > 0 ? D : 1));
    if (!sq) return -1;
    for (int64_t t = 0; t < T; t++) {
        const float *xr = x + t * D;
        for (int64_t i = 0; i < D; i++) sq[i] = (double) xr[i] * (double) xr[i];
        const double mean = (0.0 + bn_pairwise_sum(sq, D)) / (double) D;
        const float scale = 1.0f / sqrtf((float) (mean + eps));
        for (int64_t i = 0; i < D; i++) y[t * D + i] = (xr[i] * scale) * w[i];
    }
    free(sq);
    return 0;
}

/* y[T, D] = rms_norm(x[T, D]) * w[D] as ggml_compute_forward_rms_norm_f32 computes it (upstream
 * 0.3.36 ggml-cpu/ops.cpp and bitnet.cpp's fork ggml/src/ggml.c): each square rounded to float,
 * summed in double left to right from 0.0, mean = (float)(sum / D), scale = 1.0f / sqrtf(mean +
 * eps) in float, y = (x * scale) * w. Bit-identical to bitnet.model.ops.rms_norm(ggml=True)
 * (this file is built with -ffp-contract=off, so no product is fused into the sum) */
void bn_rms_norm_ggml(const float *x, int64_t T, int64_t D, const float *w, float eps, float *y) {
    for (int64_t t = 0; t < T; t++) {
        const float *xr = x + t * D;
        double sum = 0.0;
        for (int64_t i = 0; i < D; i++) {
            const float p = xr[i] * xr[i];
            sum += (double) p;
        }
        const float mean = (float) (sum / (double) D);
        const float scale = 1.0f / sqrtf(mean + eps);
        for (int64_t i = 0; i < D; i++) y[t * D + i] = (xr[i] * scale) * w[i];
    }
}

/* NEOX rope of x[T, H, hd] in place of y (bitnet.model.ops.rope_neox): pairs (i, i + hd/2),
 * y0 = x0*c - x1*s, y1 = x0*s + x1*c, each product rounded to float (no FMA) */
void bn_rope_neox(const float *x, int64_t T, int64_t H, int64_t hd, const float *cos, const float *sin, float *y) {
    const int64_t half = hd / 2;
    for (int64_t t = 0; t < T; t++)
        for (int64_t h = 0; h < H; h++) {
            const float *xr = x + (t * H + h) * hd, *c = cos + t * half, *s = sin + t * half;
            float *yr = y + (t * H + h) * hd;
            for (int64_t i = 0; i < half; i++) {
                const float x0 = xr[i], x1 = xr[i + half];
                yr[i] = x0 * c[i] - x1 * s[i];
                yr[i + half] = x0 * s[i] + x1 * c[i];
            }
        }
}

/* y = relu(gate)^2 * up (bitnet.model.ops.relu2 then the product): np.maximum keeps a NaN and
 * returns the first argument on a tie, so r = gate < 0 ? 0 : gate */
void bn_relu2_mul(const float *gate, const float *up, int64_t n, float *y) {
    for (int64_t i = 0; i < n; i++) {
        const float r = gate[i] < 0.0f ? 0.0f : gate[i];
        y[i] = (r * r) * up[i];
    }
}

/* a projection call with its activations quantized here: 0, -1 (out of memory) or -2 (bad
 * fmt); bn_lin_free releases what it holds either way */
static int bn_lin_prep(bn_lin *L, int fmt, const uint8_t *w, int64_t out, int64_t K, const float *x, int64_t T,
                       float wscale, float *y, int cap) {
    memset(L, 0, sizeof *L);
    if (fmt < 0 || fmt > 2) return -2;
    L->own = 1;
    L->q = (int8_t *) malloc((size_t) (T * K));
    if (fmt == 0) {
        L->s = (float *) malloc(sizeof(float) * (size_t) T);
        L->sums = (int32_t *) malloc(sizeof(int32_t) * (size_t) T);
        if (!L->q || !L->s || !L->sums) return -1;
        bn_quant_i8_s(x, T, K, L->q, L->s, L->sums);
    } else {
        const int64_t nb = K / 256;
        L->s = (float *) malloc(sizeof(float) * (size_t) (T * nb));
        L->sums = (int32_t *) malloc(sizeof(int32_t) * (size_t) (T * nb * 16));
        if (!L->q || !L->s || !L->sums) return -1;
        bn_quant_q8k(x, T, K, L->q, L->s, L->sums);
    }
    return bn_lin_init(L, fmt, w, out, K, T, wscale, y, cap);
}

/* one entry for the Python API: fmt 0 = I2_S (x86) x per-token int8, 1 = TQ2_0 x Q8_K,
 * 2 = TQ1_0 x Q8_K; cap limits the variant for this call only (0 = best compiled in,
 * 1 = scalar, 2 = AVX2 without VNNI). Returns the variant that ran (2 = AVX2 + VNNI,
 * 1 = AVX2, 0 = scalar), -1 if out of memory, -2 bad fmt. */
int bn_linear(int fmt, const uint8_t *w, int64_t out, int64_t K, const float *x, int64_t T, float wscale,
              float *y, int threads, int cap) {
    bn_lin L;
    int v = bn_lin_prep(&L, fmt, w, out, K, x, T, wscale, y, cap);
    if (v == 0) { bn_lin_run(&L, threads); v = L.variant; }
    bn_lin_free(&L);
    return v;
}

/* the dispatcher's fused entry points (one crossing of the Python/C boundary per projection):
 * thin names over bn_linear, honouring bn_set_force_scalar */
int bn_linear_i2s(const uint8_t *w, int64_t out, int64_t K, const float *x, int64_t T, float wscale,
                  float *y, int threads) {
    return bn_linear(0, w, out, K, x, T, wscale, y, threads, bn_force_scalar);
}

int bn_linear_tq_q8k(int tq1, const uint8_t *w, int64_t out, int64_t K, const float *x, int64_t T,
                     float *y, int threads) {
    return bn_linear(tq1 ? 2 : 1, w, out, K, x, T, 0.0f, y, threads, bn_force_scalar);
}
