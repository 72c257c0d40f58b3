/* ---- one transformer block in three native calls (appended to kernels.c and attention.c) -----
 *
 * BitNetModel.block does, per layer: RMSNorm, the q/k/v BitLinear projections, NEOX rope, the
 * KV-cache append, attention, the attention sub-norm, the output projection, the residual,
 * RMSNorm, gate and up, ReLU^2 x up, the FFN sub-norm, the down projection, the residual: ~25
 * Python-level ops, each with its NumPy temporaries and a run-log record. These three entry
 * points run the same ops, with the same C functions the per-op native path calls (bn_rms_norm,
 * bn_linear's parts bn_lin_prep / bn_lin_rows, bn_rope_neox, bn_attn_ggml, bn_relu2_mul), in the
 * same order, so the result is the per-op native path's bit for bit -- which is the NumPy
 * reference's (each of those is bit-identical to its NumPy definition; tests/test_native_layer.py
 * checks the whole block, at 1, 2, 3 and 5 threads).
 *
 *   bn_layer_qkv: x -> q, k, v (roped), for the caller to append to the KV cache (in Python,
 *                 where the cache checks every position and reports F16 overflow);
 *   bn_layer_mid: attention (either ggml order here, or the caller's NumPy/BLAS attention output),
 *                 its sub-norm, output projection and residual, the FFN norm, gate and up,
 *                 and for a ReLU^2 FFN also bn_layer_ffn's steps (nothing of the caller's between);
 *   bn_layer_ffn: the caller's SiLU x up (NumPy's exp, between the calls) or ReLU^2 x up, the FFN
 *                 sub-norm, the down projection and the residual.
 *
 * Threads: each entry point is ONE parallel region. Thread 0 runs the element-wise ops and
 * quantizes each projection's activations; every thread then computes its share of the
 * projection's rows (bn_lin_rows); between the steps the threads meet at a spin barrier. Under
 * OMP_WAIT_POLICY=PASSIVE (our default) a thread that finishes a region, or waits at one of
 * libgomp's barriers, sleeps on a futex, and waking it cost 12-20 us per region in an empty
 * loop and more inside a decode step on the 2-core EPYC VM (2026-12-02): with a region per
 * projection (and one for attention) that was ~240 wake-ups per 2B-4T step; now it is three per
 * layer (two with a ReLU^2 FFN, whose second half runs in bn_layer_mid's region), and a waiting
 * thread spins only for the others' share of the same op, yielding its CPU after 64 pauses (a
 * busy machine).
 *
 * cap: as bn_linear's, or -1 for the dispatcher's (bn_set_force_scalar). Every op's wall time
 * goes to sec[] and every projection's variant to var[], so the caller
 * records each kernel that ran in the run log with its real id, bytes and time.
 *
 * A projection is described by one bn_proj: the packed tensor, its format code (bn_linear's:
 * 0 = I2_S x86 with per-token int8, 1 = TQ2_0 x Q8_K, 2 = TQ1_0 x Q8_K), the I2_S weight scale,
 * and an optional separate scale multiplied after the matmul (upstream `bitnet`'s
 * blk.N.<proj>.scale). fused_round: bitnet.cpp's int8 tie rounding before an I2_S projection
 * (bitnet.kernels.activations.fused_round_ties, ported line by line below).
 */
#include <time.h>
#include <sched.h>

typedef struct {
    const uint8_t *w;
    int64_t n_out, n_in;
    int fmt;
    float wscale;
    int has_scale;
    float scale;
} bn_proj;

static inline double bn_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + 1e-9 * (double) ts.tv_nsec;
}

/* bitnet.kernels.activations.fused_round_ties: out = x with each element whose float product
 * x*s is exactly k + 0.5 (but whose exact product is not) moved one ulp toward its exact side */
static void bn_fused_round_ties(const float *x, int64_t T, int64_t K, float *out) {
    for (int64_t t = 0; t < T; t++) {
        const float *xr = x + t * K;
        float *o = out + t * K;
        float amax = 0.0f;
        for (int64_t i = 0; i < K; i++) { const float a = fabsf(xr[i]); if (a > amax || a != a) amax = a; }
        double mx = (double) amax;
        if (!(mx >= 1e-5)) mx = mx != mx ? mx : 1e-5;  /* np.maximum keeps a NaN */
        const float s = (float) (127.0 / mx);
        for (int64_t i = 0; i < K; i++) {
            const float p = xr[i] * s;
            o[i] = xr[i];
            if ((p - floorf(p)) == 0.5f) {
                const double exact = (double) xr[i] * (double) s;
                if (exact > (double) p) o[i] = nextafterf(xr[i], INFINITY);
                else if (exact < (double) p) o[i] = nextafterf(xr[i], -INFINITY);
            }
        }
    }
}

/* the threads of one block call meet here between its steps: the last to arrive releases the
 * others, who spin meanwhile (the wait is the other threads' share of the same op, microseconds)
 * and yield their CPU after a while instead of burning a busy machine's time */
typedef struct { int count, gen; } bn_barrier;

static void bn_barrier_wait(bn_barrier *b, int nth) {
    if (nth <= 1) return;
    const int gen = __atomic_load_n(&b->gen, __ATOMIC_ACQUIRE);
    if (__atomic_add_fetch(&b->count, 1, __ATOMIC_ACQ_REL) == nth) {
        __atomic_store_n(&b->count, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&b->gen, gen + 1, __ATOMIC_RELEASE);
        return;
    }
    for (unsigned i = 0; __atomic_load_n(&b->gen, __ATOMIC_ACQUIRE) == gen; i++) {
#if defined(__x86_64__) || defined(__i386__)
        if (i < 64) { __builtin_ia32_pause(); continue; }
#endif
        sched_yield();
    }
}

/* one shared state of a block call's region: whether every step so far succeeded (thread 0
 * clears it; all threads read it after a barrier), the barrier, and thread 0's clock */
typedef struct {
    int ok;
    bn_barrier bar;
    double t0;
} bn_team;

/* thread 0's clock: the time since the last lap into *sec */
static void bn_team_lap(bn_team *tm, double *sec) {
    const double t1 = bn_now();
    *sec = t1 - tm->t0;
    tm->t0 = t1;
}

/* y[T, out] = the projection of x[T, in] (xr: x already tie-rounded, for I2_S under fused_round)
 * inside a block's region: thread 0 quantizes, every thread computes its rows, thread 0 applies
 * the separate scale and records the variant (< 0 on failure) and the time since tm->t0 */
static void bn_team_proj(bn_team *tm, const bn_proj *p, const float *x, const float *xr, int64_t T, float *y,
                         int cap, bn_lin *L, int *var, double *sec, int tid, int nth) {
    if (tid == 0 && tm->ok) {
        const int rc = bn_lin_prep(L, p->fmt, p->w, p->n_out, p->n_in, p->fmt == 0 && xr ? xr : x, T, p->wscale, y,
                                   cap < 0 ? bn_force_scalar : cap);
        if (rc) { *var = rc; tm->ok = 0; bn_lin_free(L); }
    }
    bn_barrier_wait(&tm->bar, nth);
    if (!tm->ok) return;
    bn_lin_rows(L, tid, nth);
    bn_barrier_wait(&tm->bar, nth);
    if (tid == 0) {
        *var = L->variant;
        bn_lin_free(L);
        if (p->has_scale)
            for (int64_t i = 0; i < T * p->n_out; i++) y[i] = y[i] * p->scale;
        bn_team_lap(tm, sec);
    }
}

/* RMSNorm in the form the profile asks for: ggml's (float squares summed in double left to right,
 * bn_rms_norm_ggml, profile knob rms_ggml) or the model definition's (bn_rms_norm) */
static int bn_layer_norm(const float *x, int64_t T, int64_t D, const float *w, double eps, int rms_ggml, float *y) {
    if (rms_ggml) {
        bn_rms_norm_ggml(x, T, D, w, (float) eps, y);
        return 0;
    }
    return bn_rms_norm(x, T, D, w, eps, y);
}

/* thread 0: y = the profile's RMSNorm of x (its time into *sec), then y tie-rounded into yr for
 * the I2_S projections under fused_round */
static void bn_team_norm(bn_team *tm, const float *x, int64_t T, int64_t D, const float *w, double eps, int rms_ggml,
                         float *y, int fused_round, float *yr, double *sec) {
    if (!tm->ok) return;
    if (bn_layer_norm(x, T, D, w, eps, rms_ggml, y)) tm->ok = 0;
    bn_team_lap(tm, sec);
    if (tm->ok && fused_round) bn_fused_round_ties(y, T, D, yr);
}

/* sec[5]: attn_norm, q, k, v, rope; var[3]: q, k, v. Returns 0, or -1 (out of memory / a
 * kernel failed) */
int bn_layer_qkv(const float *x, int64_t T, int64_t D, const float *attn_norm, double eps, int rms_ggml,
                 const bn_proj *pq, const bn_proj *pk, const bn_proj *pv, int fused_round,
                 const float *cos, const float *sin, int64_t H, int64_t Hkv, int64_t hd,
                 float *q, float *k, float *v, int threads, int cap, double *sec, int *var) {
    float *a = (float *) malloc(sizeof(float) * (size_t) (T * D));
    float *ar = fused_round ? (float *) malloc(sizeof(float) * (size_t) (T * D)) : NULL;
    float *qr = (float *) malloc(sizeof(float) * (size_t) (T * H * hd));
    float *kr = (float *) malloc(sizeof(float) * (size_t) (T * Hkv * hd));
    bn_team tm = {1, {0, 0}, bn_now()};
    bn_lin L;
    if (!a || (fused_round && !ar) || !qr || !kr) tm.ok = 0;
    else {
        #pragma omp parallel num_threads(threads) if(threads > 1)
        {
            const int tid = bn_tid(), nth = bn_nth();
            if (tid == 0) bn_team_norm(&tm, x, T, D, attn_norm, eps, rms_ggml, a, fused_round, ar, &sec[0]);
            bn_team_proj(&tm, pq, a, ar, T, qr, cap, &L, &var[0], &sec[1], tid, nth);
            bn_team_proj(&tm, pk, a, ar, T, kr, cap, &L, &var[1], &sec[2], tid, nth);
            bn_team_proj(&tm, pv, a, ar, T, v, cap, &L, &var[2], &sec[3], tid, nth);
            if (tid == 0 && tm.ok) {
                bn_rope_neox(qr, T, H, hd, cos, sin, q);
                bn_rope_neox(kr, T, Hkv, hd, cos, sin, k);
                sec[4] = bn_now() - tm.t0;
            }
        }
    }
    free(a); free(ar); free(qr); free(kr);
    return tm.ok ? 0 : -1;
}

/* the FFN's second half inside a block's region: f = relu(gate)^2 * up here (f_in NULL; gate is
 * overwritten with it) or the caller's gated value f_in [T, F]; then x += down(ffn_sub_norm(f)).
 * b1, br: [T, F] scratch, b2: [T, D]. sec[3]: relu2 x up (0 when f_in is given), ffn_sub_norm,
 * down; var[1]: down. */
static void bn_ffn_steps(bn_team *tm, float *x, int64_t T, int64_t D, int64_t F, float *gate, const float *up,
                         const float *f_in, const float *ffn_sub_norm, double eps, int rms_ggml, const bn_proj *pd,
                         int fused_round, float *b1, float *b2, float *br, int cap, bn_lin *L, double *sec, int *var,
                         int tid, int nth) {
    if (tid == 0 && tm->ok) {
        const float *f = f_in;
        tm->t0 = bn_now();
        if (!f) {
            bn_relu2_mul(gate, up, T * F, gate);
            f = gate;
            bn_team_lap(tm, &sec[0]);
        }
        bn_team_norm(tm, f, T, F, ffn_sub_norm, eps, rms_ggml, b1, fused_round, br, &sec[1]);
    }
    bn_team_proj(tm, pd, b1, br, T, b2, cap, L, &var[0], &sec[2], tid, nth);
    if (tid == 0 && tm->ok)
        for (int64_t i = 0; i < T * D; i++) x[i] = x[i] + b2[i];
}

/* sec[6]: attention (0 when o_in is given), attn_sub_norm, wo, ffn_norm, gate, up; var[4]:
 * attention (bn_attn_ggml's variant, or -9 when not run here), wo, gate, up. o_in [T, D]: the
 * attention output computed by the caller, or NULL for the ggml-order attention here (q [T, H,
 * hd], the cache K/V as bn_attn_ggml takes them). x [T, D] gets the attention residual in place;
 * gate, up [T, F] the FFN's two projections of ffn_norm(x). With pd (a ReLU^2 FFN: nothing of the
 * caller's runs between), the FFN's second half follows in the same region, as bn_layer_ffn
 * would run it (ffn_sub_norm, F; its times and variant into sec_ffn[3], var_ffn[1]): one region
 * less per layer. Returns 0, or -1. */
int bn_layer_mid(float *x, int64_t T, int64_t D, const float *o_in,
                 const float *q, int64_t H, int64_t hd, const void *K, const void *V, int64_t Hkv, int64_t S,
                 int64_t kv_head_stride, int kv_f16, int64_t pos0, float scale, int attn_build,
                 const float *attn_sub_norm, const float *ffn_norm, double eps, int rms_ggml,
                 const bn_proj *po, const bn_proj *pg, const bn_proj *pu, int fused_round,
                 float *gate, float *up, const float *ffn_sub_norm, const bn_proj *pd, int64_t F,
                 double *sec_ffn, int *var_ffn, int threads, int cap, double *sec, int *var) {
    float *o = (float *) malloc(sizeof(float) * (size_t) (T * D));
    float *b1 = (float *) malloc(sizeof(float) * (size_t) (T * (pd && F > D ? F : D)));
    float *b2 = (float *) malloc(sizeof(float) * (size_t) (T * D));
    float *br = fused_round ? (float *) malloc(sizeof(float) * (size_t) (T * (pd && F > D ? F : D))) : NULL;
    bn_team tm = {1, {0, 0}, bn_now()};
    bn_lin L;
    bn_attn A;
    const float *att = o_in ? o_in : o;
    var[0] = -9;
    sec[0] = 0.0;
    if (pd) sec_ffn[0] = 0.0;
    if (!o || !b1 || !b2 || (fused_round && !br)) tm.ok = 0;
    else if (!o_in)  /* attn_build: 0 = the fork's order (q rounded to F16 inside), 1 = upstream's
                      * (q as given), exactly bn_attn_ggml's arguments in attention_ggml(build=) */
        bn_attn_init(&A, q, T, H, hd, K, V, Hkv, S, kv_head_stride, kv_f16, pos0, scale, attn_build == 0, attn_build == 1,
                     o, NULL, NULL, cap);
    if (tm.ok) {
        #pragma omp parallel num_threads(threads) if(threads > 1)
        {
            const int tid = bn_tid(), nth = bn_nth();
            if (!o_in) {  /* attention: every thread takes (head, token) rows as they come */
                bn_attn_rows(&A);
                bn_barrier_wait(&tm.bar, nth);
                if (tid == 0) {
                    var[0] = A.failed ? -1 : A.simd;
                    if (A.failed) tm.ok = 0;
                    bn_team_lap(&tm, &sec[0]);
                }
            }
            /* x + wo(sub_norm(attention)) */
            if (tid == 0) bn_team_norm(&tm, att, T, D, attn_sub_norm, eps, rms_ggml, b1, fused_round, br, &sec[1]);
            bn_team_proj(&tm, po, b1, br, T, b2, cap, &L, &var[1], &sec[2], tid, nth);
            /* gate(g), up(g), g = ffn_norm(x) */
            if (tid == 0 && tm.ok) {
                for (int64_t i = 0; i < T * D; i++) x[i] = x[i] + b2[i];
                tm.t0 = bn_now();  /* the residual is in no op's time, as in the per-op path */
                bn_team_norm(&tm, x, T, D, ffn_norm, eps, rms_ggml, b1, fused_round, br, &sec[3]);
            }
            bn_team_proj(&tm, pg, b1, br, T, gate, cap, &L, &var[2], &sec[4], tid, nth);
            bn_team_proj(&tm, pu, b1, br, T, up, cap, &L, &var[3], &sec[5], tid, nth);
            if (pd)
                bn_ffn_steps(&tm, x, T, D, F, gate, up, NULL, ffn_sub_norm, eps, rms_ggml, pd, fused_round, b1, b2, br,
                             cap, &L, sec_ffn, var_ffn, tid, nth);
        }
    }
    free(o); free(b1); free(b2); free(br);
    return tm.ok ? 0 : -1;
}

/* x += down(ffn_sub_norm(f)) as a call of its own (bn_ffn_steps; f_in: the caller's SiLU-gated
 * value, which NumPy computes between the calls). sec[3], var[1] as there. Returns 0, or -1. */
int bn_layer_ffn(float *x, int64_t T, int64_t D, int64_t F, float *gate, const float *up, const float *f_in,
                 const float *ffn_sub_norm, double eps, int rms_ggml, const bn_proj *pd, int fused_round,
                 int threads, int cap, double *sec, int *var) {
    float *b1 = (float *) malloc(sizeof(float) * (size_t) (T * F));
    float *b2 = (float *) malloc(sizeof(float) * (size_t) (T * D));
    float *br = fused_round ? (float *) malloc(sizeof(float) * (size_t) (T * F)) : NULL;
    bn_team tm = {1, {0, 0}, bn_now()};
    bn_lin L;
    sec[0] = 0.0;
    if (!b1 || !b2 || (fused_round && !br)) tm.ok = 0;
    else {
        #pragma omp parallel num_threads(threads) if(threads > 1)
        bn_ffn_steps(&tm, x, T, D, F, gate, up, f_in, ffn_sub_norm, eps, rms_ggml, pd, fused_round, b1, b2, br, cap, &L,
                     sec, var, bn_tid(), bn_nth());
    }
    free(b1); free(b2); free(br);
    return tm.ok ? 0 : -1;
}
