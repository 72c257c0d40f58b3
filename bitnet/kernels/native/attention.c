/* ---- attention as bitnet.cpp's ggml computes it (appended to kernels.c at build time) ------
 *
 * Bit for bit what bitnet.model.ggml_attention (the NumPy emulation, the reference) computes;
 * read its docstring for why each step is what the fork's ggml does. Per (head, row):
 *
 *   Q.K   ggml_vec_dot_f16 of the F16-rounded q row and each F16 K row: four 8-lane
 *         accumulators over blocks of 32, each step an FMA; reduced (a0+a2)+(a1+a3), then the
 *         8 lanes as lo+hi and ((t0+t1)+(t2+t3)); leftover elements (d % 32) as float products
 *         summed in double onto that.
 *   soft  w = kq * scale (float), masked -> -inf, max, ggml_v_expf(w - max) lane by lane, each
 *         8-lane chunk summed in float ((v0+v4)+(v2+v6))+((v1+v5)+(v3+v7)), the chunks summed
 *         in double as NumPy's pairwise sum does (bn_pairwise_sum), every value times
 *         (float)(1.0 / sum).
 *   P.V   one row (T == 1): the probabilities rounded to F16 and
 *         ggml_vec_dot_f16 over the keys (32 accumulators: key j goes to lane j % 32);
 *         otherwise tinyBLAS<8>: one 8-lane accumulator per output over the keys (key j to
 *         lane j % 8), reduced as the softmax chunks are.
 *
 * Every FMA is computed as the emulation computes it, `(float)((double)a * b + (double)c)`
 * (the product of two floats is exact in double; the sum rounds once to double, then to
 * float): not fmaf, so that C and NumPy agree on every bit, including the vanishingly rare
 * case where a true FMA would round differently. The key axis is padded to a multiple of 32
 * with zero K/V rows, as the fork's n_kv is; padded keys past the causal limit are masked.
 *
 * The AVX2 variant computes the same operations 4 doubles / 8 floats at a time (vcvtps2pd,
 * vmulpd, vaddpd, vcvtpd2ps: each rounds as the scalar C does); the scalar variant also
 * rounds float -> F16 in software (bn_f32_to_f16_sw), so a build without F16C agrees too.
 */

static inline float bn_dfma(float a, float b, float c) {
    return (float) ((double) a * (double) b + (double) c);
}

static inline uint32_t bn_fbits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float bn_bitsf(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

/* float -> IEEE half, round to nearest even, overflow to inf, NaN kept quiet (as F16C's
 * vcvtps2ph and NumPy's astype(float16) do) */
static inline uint16_t bn_f32_to_f16_sw(float f) {
    const uint32_t x = bn_fbits(f);
    const uint16_t sign = (uint16_t) ((x >> 16) & 0x8000u);
    const uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return (uint16_t) (sign | 0x7e00u | ((ax & 0x7fffffu) >> 13));
    if (ax >= 0x477ff000u) return (uint16_t) (sign | 0x7c00u);  /* >= 65520: rounds to inf */
    if (ax < 0x38800000u) {  /* below 2^-14: a half subnormal (units of 2^-24) or zero */
        const uint32_t e = ax >> 23;
        if (e < 102) return sign;  /* below 2^-25 (2^-25 itself ties to 0) */
        const uint32_t mant = (ax & 0x7fffffu) | 0x800000u, shift = 126 - e;
        uint32_t h = mant >> shift;
        const uint32_t rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1u))) h++;
        return (uint16_t) (sign | h);
    }
    const uint32_t m = ax + 0xfffu + ((ax >> 13) & 1u) - 0x38000000u;  /* RNE, rebias 127 -> 15 */
    return (uint16_t) (sign | (m >> 13));
}

static inline float bn_round_f16(float f, int simd) {
#if defined(__F16C__)
    if (simd) return _cvtsh_ss(_cvtss_sh(f, 0));
#endif
    (void) simd;
    return bn_f16_to_f32(bn_f32_to_f16_sw(f));
}

/* ggml_v_expf (ggml.c, __m256 with AVX2 + FMA), one lane; 32-bit integer lanes wrap */
static inline float bn_v_expf1(float x) {
    const float r = 0x1.8p23f;
    const float z = bn_dfma(x, 0x1.715476p+0f, r);
    const float n = z - r;
    const float b = bn_dfma(-n, 0x1.7f7d1cp-20f, bn_dfma(-n, 0x1.62e4p-1f, x));
    const uint32_t e = bn_fbits(z) << 23;
    const float k = bn_bitsf(e + bn_fbits(1.0f));
    const float u = b * b;
    const float j = bn_dfma(bn_dfma(bn_dfma(0x1.0e4020p-7f, b, 0x1.573e2ep-5f), u,
                                    bn_dfma(0x1.555e66p-3f, b, 0x1.fffdb6p-2f)),
                            u, 0x1.ffffecp-1f * b);
    const float an = fabsf(n);
    if (!(an > 126.0f)) return bn_dfma(k, j, k);
    const uint32_t g = n <= 0.0f ? 0x82000000u : 0u;
    const float s1 = bn_bitsf(g + 0x7f000000u);
    const float s2 = bn_bitsf(e - g);
    if (an > 192.0f) return s1 * s1;
    return bn_dfma(s2, j, s2) * s1;
}

/* the 4 x 8 accumulators of ggml_vec_dot_f16 reduced as its AVX code reduces them */
static inline float bn_vdot_reduce(const float *acc /* [4][8] */) {
    float a[8], t[4];
    for (int l = 0; l < 8; l++) a[l] = (acc[l] + acc[16 + l]) + (acc[8 + l] + acc[24 + l]);
    for (int l = 0; l < 4; l++) t[l] = a[l] + a[l + 4];
    return (t[0] + t[1]) + (t[2] + t[3]);
}

/* the 8-lane float sum of an __m256 by movehl/movehdup: h = hi + lo, (h0 + h2) + (h1 + h3) */
static inline float bn_hsum8(const float *x) {
    float h[4];
    for (int l = 0; l < 4; l++) h[l] = x[l + 4] + x[l];
    return (h[0] + h[2]) + (h[1] + h[3]);
}

static inline float bn_kv_at(const void *p, int kv_f16, int64_t i) {
    return kv_f16 ? bn_f16_to_f32(((const uint16_t *) p)[i]) : ((const float *) p)[i];
}

#if defined(__AVX2__) && defined(__F16C__)
#define BN_ATT_SIMD 1
/* (float)((double)a * b + (double)c) on 8 lanes */
static inline __m256 bn_dfma8(__m256 a, __m256 b, __m256 c) {
    const __m256d lo = _mm256_add_pd(_mm256_mul_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(a)),
                                                   _mm256_cvtps_pd(_mm256_castps256_ps128(b))),
                                     _mm256_cvtps_pd(_mm256_castps256_ps128(c)));
    const __m256d hi = _mm256_add_pd(_mm256_mul_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(a, 1)),
                                                   _mm256_cvtps_pd(_mm256_extractf128_ps(b, 1))),
                                     _mm256_cvtps_pd(_mm256_extractf128_ps(c, 1)));
    return _mm256_set_m128(_mm256_cvtpd_ps(hi), _mm256_cvtpd_ps(lo));
}

/* the same, for F16-valued a and b: their product (<= 22 significant bits) is exact in float, so
 * the double sum rounded to float is the float sum of the product rounded once -- what a fused
 * multiply-add computes (a double rounding could only differ when the sum is inexact in double,
 * i.e. the operands are > 29 binades apart, and then both give the larger one) */
static inline __m256 bn_fma8_exact(__m256 a, __m256 b, __m256 c) {
#if defined(__FMA__)
    return _mm256_fmadd_ps(a, b, c);
#else
    return _mm256_add_ps(_mm256_mul_ps(a, b), c);
#endif
}

static inline __m256 bn_kv_load8(const void *p, int kv_f16, int64_t i) {
    return kv_f16 ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) ((const uint16_t *) p + i)))
                  : _mm256_loadu_ps((const float *) p + i);
}
#else
#define BN_ATT_SIMD 0
#endif

#if BN_ATT_SIMD
/* bn_v_expf1 on 8 lanes: the same operations lane by lane (the overflow/underflow lanes blended
 * in, as ggml's AVX2 code does) */
static inline __m256 bn_v_expf8(__m256 x) {
    const __m256 r = _mm256_set1_ps(0x1.8p23f), sign = _mm256_set1_ps(-0.0f);
    const __m256 z = bn_dfma8(x, _mm256_set1_ps(0x1.715476p+0f), r);
    const __m256 n = _mm256_sub_ps(z, r), nn = _mm256_xor_ps(n, sign);
    const __m256 b = bn_dfma8(nn, _mm256_set1_ps(0x1.7f7d1cp-20f), bn_dfma8(nn, _mm256_set1_ps(0x1.62e4p-1f), x));
    const __m256i e = _mm256_slli_epi32(_mm256_castps_si256(z), 23);
    const __m256 k = _mm256_castsi256_ps(_mm256_add_epi32(e, _mm256_castps_si256(_mm256_set1_ps(1.0f))));
    const __m256 u = _mm256_mul_ps(b, b);
    const __m256 j = bn_dfma8(bn_dfma8(bn_dfma8(_mm256_set1_ps(0x1.0e4020p-7f), b, _mm256_set1_ps(0x1.573e2ep-5f)), u,
                                      bn_dfma8(_mm256_set1_ps(0x1.555e66p-3f), b, _mm256_set1_ps(0x1.fffdb6p-2f))),
                             u, _mm256_mul_ps(_mm256_set1_ps(0x1.ffffecp-1f), b));
    const __m256 out = bn_dfma8(k, j, k);
    const __m256 an = _mm256_andnot_ps(sign, n);
    const __m256 c = _mm256_cmp_ps(an, _mm256_set1_ps(126.0f), _CMP_GT_OQ);
    if (!_mm256_movemask_ps(c)) return out;
    const __m256i g = _mm256_and_si256(_mm256_castps_si256(_mm256_cmp_ps(n, _mm256_setzero_ps(), _CMP_LE_OQ)),
                                       _mm256_set1_epi32((int) 0x82000000u));
    const __m256 s1 = _mm256_castsi256_ps(_mm256_add_epi32(g, _mm256_set1_epi32(0x7f000000)));
    const __m256 s2 = _mm256_castsi256_ps(_mm256_sub_epi32(e, g));
    const __m256 d = _mm256_cmp_ps(an, _mm256_set1_ps(192.0f), _CMP_GT_OQ);
    const __m256 big = _mm256_blendv_ps(_mm256_mul_ps(bn_dfma8(s2, j, s2), s1), _mm256_mul_ps(s1, s1), d);
    return _mm256_blendv_ps(out, big, c);
}

/* bn_vdot_reduce of four 8-lane accumulators in registers (ggml's GGML_F32x8_REDUCE) */
static inline float bn_vdot_reduce8(__m256 a0, __m256 a1, __m256 a2, __m256 a3) {
    const __m256 a = _mm256_add_ps(_mm256_add_ps(a0, a2), _mm256_add_ps(a1, a3));
    __m128 t = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    t = _mm_hadd_ps(t, t);  /* (t0 + t1), (t2 + t3) */
    t = _mm_hadd_ps(t, t);  /* (t0 + t1) + (t2 + t3) */
    return _mm_cvtss_f32(t);
}
#endif

/* ggml_vec_dot_f16(q, k row) for q already F16-valued (float), n = d; exact: q and K both hold
 * F16 values (bn_fma8_exact applies) */
static float bn_qk_dot(const float *q, const void *krow, int kv_f16, int64_t d, int simd, int exact, int float_tail) {
    const int64_t nb = d - d % 32;
    float acc[32];
    int64_t i = 0;
#if BN_ATT_SIMD
    if (simd) {
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        if (exact)
            for (; i < nb; i += 32) {
                a0 = bn_fma8_exact(_mm256_loadu_ps(q + i), bn_kv_load8(krow, kv_f16, i), a0);
                a1 = bn_fma8_exact(_mm256_loadu_ps(q + i + 8), bn_kv_load8(krow, kv_f16, i + 8), a1);
                a2 = bn_fma8_exact(_mm256_loadu_ps(q + i + 16), bn_kv_load8(krow, kv_f16, i + 16), a2);
                a3 = bn_fma8_exact(_mm256_loadu_ps(q + i + 24), bn_kv_load8(krow, kv_f16, i + 24), a3);
            }
        for (; i < nb; i += 32) {
            a0 = bn_dfma8(_mm256_loadu_ps(q + i), bn_kv_load8(krow, kv_f16, i), a0);
            a1 = bn_dfma8(_mm256_loadu_ps(q + i + 8), bn_kv_load8(krow, kv_f16, i + 8), a1);
            a2 = bn_dfma8(_mm256_loadu_ps(q + i + 16), bn_kv_load8(krow, kv_f16, i + 16), a2);
            a3 = bn_dfma8(_mm256_loadu_ps(q + i + 24), bn_kv_load8(krow, kv_f16, i + 24), a3);
        }
        if (nb == d) return bn_vdot_reduce8(a0, a1, a2, a3);  /* no tail: (float) (double) r == r, either way */
        _mm256_storeu_ps(acc, a0); _mm256_storeu_ps(acc + 8, a1);
        _mm256_storeu_ps(acc + 16, a2); _mm256_storeu_ps(acc + 24, a3);
    } else
#endif
    {
        for (int l = 0; l < 32; l++) acc[l] = 0.0f;
        for (; i < nb; i += 32)
            for (int l = 0; l < 32; l++) acc[l] = bn_dfma(q[i + l], bn_kv_at(krow, kv_f16, i + l), acc[l]);
    }
    if (float_tail) {  /* ggml_vec_dot_f32's tail as gcc compiled it: products added in float, the last d % 4 fused */
        float r = bn_vdot_reduce(acc);
        const int64_t plain = nb + (d - nb) / 4 * 4;
        for (i = nb; i < d; i++) {
            const float y = bn_kv_at(krow, kv_f16, i);
            r = i < plain ? r + q[i] * y : bn_dfma(q[i], y, r);
        }
        return r;
    }
    double s = (double) bn_vdot_reduce(acc);
    for (i = nb; i < d; i++) s += (double) (q[i] * bn_kv_at(krow, kv_f16, i));
    return (float) s;
}

/* tinyBLAS<8>'s dot of a K row and q (upstream Q.K with one head and 2+ rows): one 8-lane
 * accumulator over d in steps of 8, then the 8-lane float sum */
static float bn_qk_tinyblas(const float *q, const void *krow, int kv_f16, int64_t d) {
    float acc[8] = {0};
    for (int64_t i = 0; i < d; i += 8)
        for (int l = 0; l < 8; l++) acc[l] = bn_dfma(bn_kv_at(krow, kv_f16, i + l), q[i + l], acc[l]);
    return bn_hsum8(acc);
}

/* acc[R][d] += (per key j < sp, lane j % R) dfma(p[j], V[j][:]); keys >= S are zero rows */
static void bn_pv_accumulate(const float *p, const void *vh, int kv_f16, int64_t S, int64_t sp, int64_t d,
                             int R, float *acc, int simd, int exact) {
    for (int64_t j = 0; j < sp; j++) {
        float *ar = acc + (j % R) * d;
        const float pj = p[j];
        int64_t i = 0;
        if (j >= S) {  /* a padded key: V is zero there: fma(0, p, acc) is acc unless p is inf/NaN */
            if (!isfinite(pj))
                for (; i < d; i++) ar[i] = bn_dfma(0.0f, pj, ar[i]);
            continue;
        }
        const int64_t off = j * d;
#if BN_ATT_SIMD
        if (simd) {
            const __m256 pv = _mm256_set1_ps(pj);
            if (exact)  /* p and V both F16-valued (one row, F16 cache) */
                for (; i + 8 <= d; i += 8)
                    _mm256_storeu_ps(ar + i, bn_fma8_exact(bn_kv_load8(vh, kv_f16, off + i), pv, _mm256_loadu_ps(ar + i)));
            for (; i + 8 <= d; i += 8)
                _mm256_storeu_ps(ar + i, bn_dfma8(bn_kv_load8(vh, kv_f16, off + i), pv, _mm256_loadu_ps(ar + i)));
        }
#endif
        for (; i < d; i++) ar[i] = bn_dfma(bn_kv_at(vh, kv_f16, off + i), pj, ar[i]);
    }
}

/* one attention call: its arguments, the choices made from them, and the shared row counter
 * and failure flag of the threads that split its (head, token) rows */
typedef struct {
    const float *q;
    int64_t T, H, d;
    const void *k, *v;
    int64_t S, kv_head_stride, pos0;
    int kv_f16, q_f16;
    float scale;
    float *out, *scores, *probs;
    int simd, upstream, one_row, p_f16, qk_tiny, R;
    int64_t sp, group, nrow;
    int64_t next;
    int failed;
} bn_attn;

static void bn_attn_init(bn_attn *A, const float *q, int64_t T, int64_t H, int64_t d, const void *k, const void *v,
                         int64_t Hkv, int64_t S, int64_t kv_head_stride, int kv_f16, int64_t pos0, float scale,
                         int q_f16, int build, float *out, float *scores, float *probs, int cap) {
    A->q = q; A->T = T; A->H = H; A->d = d; A->k = k; A->v = v; A->S = S; A->kv_head_stride = kv_head_stride;
    A->pos0 = pos0; A->kv_f16 = kv_f16; A->q_f16 = q_f16; A->scale = scale; A->out = out; A->scores = scores;
    A->probs = probs;
    A->simd = BN_ATT_SIMD && bn_pick(cap < 0 ? bn_force_scalar : cap) > 0;
    A->sp = (S + 31) / 32 * 32; A->group = H / Hkv; A->nrow = H * T;
    A->upstream = build == 1;
    /* P.V as ggml_vec_dot over the keys (32 lanes) rather than tinyBLAS<8>: the fork with one
     * row (F16 probabilities), upstream with one row or a head_dim tinyBLAS refuses (F32 ones) */
    A->one_row = A->upstream ? (T == 1 || d % 4 != 0) : T == 1;
    A->p_f16 = A->one_row && !A->upstream;
    A->qk_tiny = A->upstream && T >= 2 && H == 1 && d % 8 == 0;
    A->R = A->one_row ? 32 : 8;
    A->next = 0;
    A->failed = 0;
}

/* the rows this thread takes from the shared counter, with its own scratch */
static void bn_attn_rows(bn_attn *A) {
    const float *q = A->q;
    const int64_t T = A->T, H = A->H, d = A->d, S = A->S, kv_head_stride = A->kv_head_stride, pos0 = A->pos0;
    const void *k = A->k, *v = A->v;
    const int kv_f16 = A->kv_f16, q_f16 = A->q_f16, simd = A->simd, upstream = A->upstream, one_row = A->one_row;
    const int p_f16 = A->p_f16, qk_tiny = A->qk_tiny, R = A->R;
    const float scale = A->scale;
    float *out = A->out, *scores = A->scores, *probs = A->probs;
    const int64_t sp = A->sp, group = A->group, nrow = A->nrow;
    float *qh = (float *) malloc(sizeof(float) * (size_t) d);
    float *kq = (float *) malloc(sizeof(float) * (size_t) sp);
    float *pr = (float *) malloc(sizeof(float) * (size_t) sp);
    double *cs = (double *) malloc(sizeof(double) * (size_t) (sp / 8));
    float *acc = (float *) malloc(sizeof(float) * (size_t) (R * d));
    if (!qh || !kq || !pr || !cs || !acc) {
        __atomic_store_n(&A->failed, 1, __ATOMIC_RELAXED);
    } else {
        /* rows in dynamic order, one at a time (each row's arithmetic is the same whichever
         * thread takes it) */
        for (int64_t r; (r = __atomic_fetch_add(&A->next, 1, __ATOMIC_RELAXED)) < nrow;) {
            const int64_t h = r / T, t = r % T, kvh = h / group;
            const float *qr = q + (t * H + h) * d;
            for (int64_t i = 0; i < d; i++) qh[i] = q_f16 ? bn_round_f16(qr[i], simd) : qr[i];
            const void *kh = kv_f16 ? (const void *) ((const uint16_t *) k + kvh * kv_head_stride)
                                    : (const void *) ((const float *) k + kvh * kv_head_stride);
            const void *vh = kv_f16 ? (const void *) ((const uint16_t *) v + kvh * kv_head_stride)
                                    : (const void *) ((const float *) v + kvh * kv_head_stride);
            /* Q.K; a padded key is a zero row: the dot of q with zeros */
            for (int64_t j = 0; j < S; j++) {
                const void *kr = kv_f16 ? (const void *) ((const uint16_t *) kh + j * d)
                                        : (const void *) ((const float *) kh + j * d);
                kq[j] = qk_tiny ? bn_qk_tinyblas(qh, kr, kv_f16, d)
                                : bn_qk_dot(qh, kr, kv_f16, d, simd, q_f16 && kv_f16, upstream);
            }
            if (sp > S && (upstream || qk_tiny)) {  /* a padded key is a zero row */
                const float zero[8] = {0};
                for (int64_t j = S; j < sp; j++) {
                    float acc0[8] = {0}, r = 0.0f;
                    if (qk_tiny) {
                        for (int64_t i = 0; i < d; i += 8)
                            for (int l = 0; l < 8; l++) acc0[l] = bn_dfma(zero[l], qh[i + l], acc0[l]);
                        r = bn_hsum8(acc0);
                    } else {
                        float z32[32] = {0};
                        const int64_t nb = d - d % 32, plain = nb + (d - nb) / 4 * 4;
                        for (int64_t i = 0; i < nb; i += 32)
                            for (int l = 0; l < 32; l++) z32[l] = bn_dfma(qh[i + l], 0.0f, z32[l]);
                        r = bn_vdot_reduce(z32);
                        for (int64_t i = nb; i < d; i++) r = i < plain ? r + qh[i] * 0.0f : bn_dfma(qh[i], 0.0f, r);
                    }
                    kq[j] = r;
                }
            } else if (sp > S) {
                float zacc[32] = {0};
                const int64_t nb = d - d % 32;
                for (int64_t i = 0; i < nb; i += 32)
                    for (int l = 0; l < 32; l++) zacc[l] = bn_dfma(qh[i + l], 0.0f, zacc[l]);
                double s0 = (double) bn_vdot_reduce(zacc);
                for (int64_t i = nb; i < d; i++) s0 += (double) (qh[i] * 0.0f);
                for (int64_t j = S; j < sp; j++) kq[j] = (float) s0;
            }
            if (scores) memcpy(scores + (h * T + t) * S, kq, sizeof(float) * (size_t) S);
            /* softmax */
            const int64_t lim = pos0 + t;
            float mx = -INFINITY;
            int nan = 0;
            for (int64_t j = 0; j < sp; j++) {
                const float w = j > lim ? -INFINITY : kq[j] * scale;
                pr[j] = w;
                if (w != w) nan = 1;
                else if (w > mx) mx = w;
            }
            if (nan) mx = NAN;
            int64_t j0 = 0;
#if BN_ATT_SIMD
            if (simd)
                for (const __m256 m8 = _mm256_set1_ps(mx); j0 < sp; j0 += 8)
                    _mm256_storeu_ps(pr + j0, bn_v_expf8(_mm256_sub_ps(_mm256_loadu_ps(pr + j0), m8)));
#endif
            for (int64_t j = j0; j < sp; j++) pr[j] = bn_v_expf1(pr[j] - mx);
            for (int64_t c = 0; c < sp / 8; c++) {
                const float *x = pr + 8 * c;
                cs[c] = (double) (((x[0] + x[4]) + (x[2] + x[6])) + ((x[1] + x[5]) + (x[3] + x[7])));
            }
            const float inv = (float) (1.0 / (0.0 + bn_pairwise_sum(cs, sp / 8)));
            for (int64_t j = 0; j < sp; j++) pr[j] = pr[j] * inv;
            if (probs) memcpy(probs + (h * T + t) * S, pr, sizeof(float) * (size_t) S);
            /* P.V */
            if (p_f16)
                for (int64_t j = 0; j < sp; j++) pr[j] = bn_round_f16(pr[j], simd);
            memset(acc, 0, sizeof(float) * (size_t) (R * d));
            bn_pv_accumulate(pr, vh, kv_f16, S, sp, d, R, acc, simd, p_f16 && kv_f16);
            float *o = out + t * H * d + h * d;
            /* each output's lanes reduced as bn_vdot_reduce / bn_hsum8 do, for all d at once
             * (the same adds in the same order, element-wise over i) */
            if (one_row) {
                for (int l = 0; l < 8; l++) {
                    float *a = acc + l * d;
                    const float *b = acc + (8 + l) * d, *c = acc + (16 + l) * d, *e = acc + (24 + l) * d;
                    for (int64_t i = 0; i < d; i++) a[i] = (a[i] + c[i]) + (b[i] + e[i]);
                }
                for (int l = 0; l < 4; l++) {
                    float *a = acc + l * d;
                    const float *b = acc + (l + 4) * d;
                    for (int64_t i = 0; i < d; i++) a[i] = a[i] + b[i];
                }
                for (int64_t i = 0; i < d; i++) o[i] = (acc[i] + acc[d + i]) + (acc[2 * d + i] + acc[3 * d + i]);
            } else {
                for (int l = 0; l < 4; l++) {
                    float *a = acc + l * d;
                    const float *b = acc + (l + 4) * d;
                    for (int64_t i = 0; i < d; i++) a[i] = b[i] + a[i];
                }
                for (int64_t i = 0; i < d; i++) o[i] = (acc[i] + acc[2 * d + i]) + (acc[d + i] + acc[3 * d + i]);
            }
        }
    }
    free(qh); free(kq); free(pr); free(cs); free(acc);
}

/* out[T, H*d] = ggml-order attention of q[T, H, d] over the cache (K, V [Hkv, S, d] with a
 * head stride of kv_head_stride elements, F16 when kv_f16 else F32) at positions pos0..
 * q_f16: q rounded to F16 (the vec_dot_type of an F16 K). build 0 = the fork: with T == 1 the
 * probabilities rounded to F16 and P.V as ggml_vec_dot_f16, else tinyBLAS<8>; build 1 = upstream
 * llama.cpp 0.3.36: Q.K as ggml_vec_dot_f32 (its float tail) or, with one head and 2+ rows,
 * tinyBLAS<8>; P.V as ggml_vec_dot_f32 with F32 probabilities for one row (or a head_dim not a
 * multiple of 4), else tinyBLAS<8> (bitnet.model.ggml_attention, build "llama.cpp").
 * scores / probs (may be NULL): [H, T, S] float, the raw q.k and the softmax (the recording
 * taps). cap: as bn_linear's, or -1 for the dispatcher's (bn_set_force_scalar). Returns the
 * variant that ran (1 = AVX2, 0 = scalar), -1 when out of memory. */
int bn_attn_ggml(const float *q, int64_t T, int64_t H, int64_t d, const void *k, const void *v,
                 int64_t Hkv, int64_t S, int64_t kv_head_stride, int kv_f16, int64_t pos0, float scale,
                 int q_f16, int build, float *out, float *scores, float *probs, int threads, int cap) {
    bn_attn A;
    bn_attn_init(&A, q, T, H, d, k, v, Hkv, S, kv_head_stride, kv_f16, pos0, scale, q_f16, build, out, scores, probs,
                 cap);
    /* threads only where the work pays for waking them (a tiny model's few heads do not) */
    const int par = threads > 1 && A.nrow > 1 && A.nrow * A.sp * d >= 32768;
    #pragma omp parallel num_threads(threads) if(par)
    bn_attn_rows(&A);
    return A.failed ? -1 : A.simd;
}

/* y = ggml_v_expf(x) element by element (8 lanes at a time in the AVX2 variant, the portable
 * lanes otherwise and for the tail); returns the variant that ran */
int bn_v_expf(const float *x, int64_t n, float *y, int cap) {
    const int simd = BN_ATT_SIMD && bn_pick(cap < 0 ? bn_force_scalar : cap) > 0;
    int64_t i = 0;
#if BN_ATT_SIMD
    if (simd)
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, bn_v_expf8(_mm256_loadu_ps(x + i)));
#endif
    for (; i < n; i++) y[i] = bn_v_expf1(x[i]);
    return simd;
}
