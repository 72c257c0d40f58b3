/* bitnet-harness crossval shim: a flat, stable C interface over libllama.
 *
 * Compiled against the target's own llama.h by bitnet.toolchain.ffi.build_shim. BH_OLD_API selects the
 * older API of bitnet.cpp's llama.cpp fork (llama_load_model_from_file, ...); otherwise the
 * current upstream API (llama_model_load_from_file, llama_init_from_model, vocab objects).
 * Every evaluation uses a fresh context: no flash attention, causal attention, logits for every
 * position, the whole sequence in one batch; an F32 K/V cache upstream, the fork's F16 one
 * (it refuses any other V type without flash attention).
 */
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <stdint.h>
#include "llama.h"

typedef struct {
    struct llama_model *model;
    int n_ctx;
    int n_threads;
} bh_handle;

static void bh_quiet(enum ggml_log_level level, const char *text, void *user) {
    (void) level; (void) text; (void) user;
}

static int bh_initialised = 0;

int bh_api(void) {
#ifdef BH_OLD_API
    return 2;
#else
    return 1;
#endif
}

void *bh_load(const char *path, int n_ctx, int n_threads, int verbose) {
    if (!bh_initialised) {
        if (!verbose) llama_log_set(bh_quiet, NULL);
        llama_backend_init();
        bh_initialised = 1;
    }
    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
#ifdef BH_OLD_API
    struct llama_model *m = llama_load_model_from_file(path, mp);
#else
    struct llama_model *m = llama_model_load_from_file(path, mp);
#endif
    if (!m) return NULL;
    bh_handle *h = (bh_handle *) calloc(1, sizeof(bh_handle));
    h->model = m;
    h->n_ctx = n_ctx;
    h->n_threads = n_threads;
    return h;
}

int bh_n_vocab(void *hp) {
    bh_handle *h = (bh_handle *) hp;
#ifdef BH_OLD_API
    return llama_n_vocab(h->model);
#else
    return llama_vocab_n_tokens(llama_model_get_vocab(h->model));
#endif
}

int bh_tokenize(void *hp, const char *text, int len, int *out, int max, int add_special, int parse_special) {
    bh_handle *h = (bh_handle *) hp;
#ifdef BH_OLD_API
    return llama_tokenize(h->model, text, len, out, max, add_special, parse_special);
#else
    return llama_tokenize(llama_model_get_vocab(h->model), text, len, out, max, add_special, parse_special);
#endif
}

static struct llama_context *bh_context_cb(bh_handle *h, int n, ggml_backend_sched_eval_callback cb, void *ud) {
    struct llama_context_params cp = llama_context_default_params();
    cp.cb_eval = cb;
    cp.cb_eval_user_data = ud;
    cp.n_ctx = (uint32_t) (h->n_ctx > n ? h->n_ctx : n);
    cp.n_batch = cp.n_ctx;
    cp.n_ubatch = cp.n_ctx;
    cp.n_threads = h->n_threads;
    cp.n_threads_batch = h->n_threads;
#ifdef BH_OLD_API
    /* the fork refuses a non-F16 V cache without flash attention ("V cache quantization
     * requires flash_attn"): keep its F16 K/V cache, which the bitnet.cpp numerics profile mirrors */
    cp.logits_all = 1;
    cp.flash_attn = 0;
    return llama_new_context_with_model(h->model, cp);
#else
    cp.type_k = GGML_TYPE_F32;
    cp.type_v = GGML_TYPE_F32;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    cp.attention_type = LLAMA_ATTENTION_TYPE_CAUSAL;
    cp.no_perf = 1;
    return llama_init_from_model(h->model, cp);
#endif
}

static struct llama_context *bh_context(bh_handle *h, int n) {
    return bh_context_cb(h, n, NULL, NULL);
}

static int bh_decode(struct llama_context *ctx, const int *ids, int n, int pos0, int all_logits) {
    struct llama_batch b = llama_batch_init(n, 0, 1);
    for (int i = 0; i < n; i++) {
        b.token[i] = ids[i];
        b.pos[i] = pos0 + i;
        b.n_seq_id[i] = 1;
        b.seq_id[i][0] = 0;
        b.logits[i] = (int8_t) (all_logits || i == n - 1);
    }
    b.n_tokens = n;
    int rc = llama_decode(ctx, b);
    llama_batch_free(b);
    return rc;
}

/* copy the logits of positions 0..n-1 of the last decode into out[n * n_vocab]; 0, or -2 when
 * llama.cpp kept no logits for a position */
static int bh_copy_logits(bh_handle *h, struct llama_context *ctx, int n, float *out) {
    int nv = bh_n_vocab(h);
    for (int i = 0; i < n; i++) {
        const float *l = llama_get_logits_ith(ctx, i);
        if (!l) return -2;
        memcpy(out + (size_t) i * nv, l, sizeof(float) * (size_t) nv);
    }
    return 0;
}

/* logits of every position of ids into out[n * n_vocab]; 0 on success */
int bh_eval(void *hp, const int *ids, int n, float *out) {
    bh_handle *h = (bh_handle *) hp;
    struct llama_context *ctx = bh_context(h, n);
    if (!ctx) return -1;
    int rc = bh_decode(ctx, ids, n, 0, 1);
    if (rc == 0) rc = bh_copy_logits(h, ctx, n, out);
    llama_free(ctx);
    return rc;
}

/* greedy generation of n_gen tokens after ids; 0 on success */
int bh_greedy(void *hp, const int *ids, int n, int n_gen, int *out) {
    bh_handle *h = (bh_handle *) hp;
    struct llama_context *ctx = bh_context(h, n + n_gen);
    if (!ctx) return -1;
    int nv = bh_n_vocab(h);
    int rc = bh_decode(ctx, ids, n, 0, 0);
    int pos = n;
    for (int g = 0; rc == 0 && g < n_gen; g++) {
        const float *l = llama_get_logits_ith(ctx, -1);
        int best = 0;
        for (int v = 1; v < nv; v++) if (l[v] > l[best]) best = v;
        out[g] = best;
        if (g + 1 < n_gen) rc = bh_decode(ctx, &best, 1, pos++, 0);
    }
    llama_free(ctx);
    return rc;
}

/* teacher-forced decode steps along the reference's own greedy path: prefill ids in one batch,
 * greedy[0] = argmax of the last position; then step s decodes greedy[s] at position n + s
 * through the KV cache, stores its logits in out[s * n_vocab] and greedy[s + 1] = their argmax.
 * Our engine replays exactly these tokens, so both sides see the same sequence. 0 on success */
/* per-layer capture state of one decode step (bh_decode_steps_layers' eval callback) */
typedef struct {
    int n_layer, n_embd, active, captured, mismatched;
    float *out; /* this step's [n_layer][n_embd] */
} bh_step_capture;

/* the shared loop of bh_decode_steps and bh_decode_steps_layers: prefill, then n_steps greedy
 * steps; while a step runs `cap` (when given) is pointed at that step's rows of layers_out */
static int bh_greedy_steps(bh_handle *h, struct llama_context *ctx, const int *ids, int n, int n_steps, int *greedy,
                           float *out, bh_step_capture *cap, float *layers_out) {
    int nv = bh_n_vocab(h);
    int rc = bh_decode(ctx, ids, n, 0, 0);
    const float *l = rc == 0 ? llama_get_logits_ith(ctx, -1) : NULL;
    for (int s = 0; rc == 0 && s < n_steps; s++) {
        if (!l) { rc = -2; break; }
        int best = 0;
        for (int v = 1; v < nv; v++) if (l[v] > l[best]) best = v;
        greedy[s] = best;
        if (cap) {
            cap->active = 1;
            cap->out = layers_out + (size_t) s * cap->n_layer * cap->n_embd;
        }
        rc = bh_decode(ctx, &best, 1, n + s, 0);
        if (cap) cap->active = 0;
        if (rc != 0) break;
        l = llama_get_logits_ith(ctx, -1);
        if (!l) { rc = -2; break; }
        memcpy(out + (size_t) s * nv, l, sizeof(float) * (size_t) nv);
    }
    return rc;
}

int bh_decode_steps(void *hp, const int *ids, int n, int n_steps, int *greedy, float *out) {
    bh_handle *h = (bh_handle *) hp;
    struct llama_context *ctx = bh_context(h, n + n_steps);
    if (!ctx) return -1;
    int rc = bh_greedy_steps(h, ctx, ids, n, n_steps, greedy, out, NULL, NULL);
    llama_free(ctx);
    return rc;
}

/* the prompt token by token: each id decoded alone at its position through the KV cache (the
 * single-row path a chat takes), its logits into out[i * n_vocab]; then n_steps teacher-forced
 * greedy steps exactly as bh_decode_steps (greedy[s], steps_out[s * n_vocab]). Against a batch
 * evaluation of the same ids it tells a batched-kernel fault from a per-token one. 0 on success */
int bh_eval_stepwise(void *hp, const int *ids, int n, int n_steps, int *greedy, float *out, float *steps_out) {
    bh_handle *h = (bh_handle *) hp;
    struct llama_context *ctx = bh_context(h, n + n_steps);
    if (!ctx) return -1;
    int nv = bh_n_vocab(h);
    int rc = 0;
    const float *l = NULL;
    for (int i = 0; rc == 0 && i < n; i++) {
        rc = bh_decode(ctx, ids + i, 1, i, 1);
        l = rc == 0 ? llama_get_logits_ith(ctx, -1) : NULL;
        if (rc == 0 && !l) rc = -2;
        if (rc == 0) memcpy(out + (size_t) i * nv, l, sizeof(float) * (size_t) nv);
    }
    for (int s = 0; rc == 0 && s < n_steps; s++) {
        int best = 0;
        for (int v = 1; v < nv; v++) if (l[v] > l[best]) best = v;
        greedy[s] = best;
        rc = bh_decode(ctx, &best, 1, n + s, 1);
        l = rc == 0 ? llama_get_logits_ith(ctx, -1) : NULL;
        if (rc == 0 && !l) rc = -2;
        if (rc == 0) memcpy(steps_out + (size_t) s * nv, l, sizeof(float) * (size_t) nv);
    }
    llama_free(ctx);
    return rc;
}

/* per-layer capture through the graph eval callback (cb_eval): every `l_out-N` node (the
 * residual stream after layer N, [n_embd, n_tokens] F32) is copied out as it is computed */
typedef struct {
    int n_layer, n_embd, n_tokens, captured, mismatched;
    float *out; /* [n_layer][n_tokens][n_embd] */
} bh_capture;

static bool bh_capture_cb(struct ggml_tensor *t, bool ask, void *ud) {
    bh_capture *c = (bh_capture *) ud;
    if (strncmp(t->name, "l_out-", 6) != 0) return ask ? false : true;
    if (ask) return true;
    int il = atoi(t->name + 6);
    size_t want = (size_t) c->n_embd * (size_t) c->n_tokens * sizeof(float);
    if (il < 0 || il >= c->n_layer || t->type != GGML_TYPE_F32 || t->ne[0] != c->n_embd ||
        t->ne[1] != c->n_tokens || ggml_nbytes(t) != want) {
        c->mismatched++;
        return true;
    }
    ggml_backend_tensor_get(t, c->out + (size_t) il * c->n_embd * c->n_tokens, 0, want);
    c->captured++;
    return true;
}

/* logits of every position (as bh_eval) plus every layer's output into layers_out
 * [n_layer * n * n_embd]; returns the number of layers captured (n_layer on success), or < 0 */
int bh_eval_layers(void *hp, const int *ids, int n, int n_layer, int n_embd, float *logits_out, float *layers_out) {
    bh_handle *h = (bh_handle *) hp;
    bh_capture cap = {n_layer, n_embd, n, 0, 0, layers_out};
    struct llama_context *ctx = bh_context_cb(h, n, bh_capture_cb, &cap);
    if (!ctx) return -1;
    int rc = bh_decode(ctx, ids, n, 0, 1);
    if (rc == 0) rc = bh_copy_logits(h, ctx, n, logits_out);
    llama_free(ctx);
    if (rc != 0) return rc < 0 ? rc : -3;
    return cap.mismatched ? -4 : cap.captured;
}

/* per-layer capture of the teacher-forced decode steps: as bh_decode_steps, and while step s
 * runs (one token through the KV cache) every `l_out-N` row goes to
 * layers_out[(s * n_layer + N) * n_embd]; the prompt pass itself is not observed (bh_eval_layers
 * captures it). Returns the number of rows captured (n_steps * n_layer on success), or < 0 */
static bool bh_step_cb(struct ggml_tensor *t, bool ask, void *ud) {
    bh_step_capture *c = (bh_step_capture *) ud;
    if (strncmp(t->name, "l_out-", 6) != 0 || !c->active) return ask ? false : true;
    if (ask) return true;
    int il = atoi(t->name + 6);
    size_t want = (size_t) c->n_embd * sizeof(float);
    if (il < 0 || il >= c->n_layer || t->type != GGML_TYPE_F32 || t->ne[0] != c->n_embd || t->ne[1] != 1 ||
        ggml_nbytes(t) != want) {
        c->mismatched++;
        return true;
    }
    ggml_backend_tensor_get(t, c->out + (size_t) il * c->n_embd, 0, want);
    c->captured++;
    return true;
}

int bh_decode_steps_layers(void *hp, const int *ids, int n, int n_steps, int n_layer, int n_embd, int *greedy,
                           float *out, float *layers_out) {
    bh_handle *h = (bh_handle *) hp;
    bh_step_capture cap = {n_layer, n_embd, 0, 0, 0, layers_out};
    struct llama_context *ctx = bh_context_cb(h, n + n_steps, bh_step_cb, &cap);
    if (!ctx) return -1;
    int rc = bh_greedy_steps(h, ctx, ids, n, n_steps, greedy, out, &cap, layers_out);
    llama_free(ctx);
    if (rc != 0) return rc < 0 ? rc : -3;
    return cap.mismatched ? -4 : cap.captured;
}

/* ---- op-by-op trace (issue 17): every graph node whose name is one of a set of base names
 * (`attn_norm` matches `attn_norm-0`, `attn_norm-1`, ...; `result_norm` matches itself) is
 * copied out as F32 when it has been computed: its name, ggml op, ne[0..3] and values in
 * ggml order. F16/BF16 are widened; views and non-contiguous tensors are read through their
 * strides (ggml_nbytes spans them); a buffer not in host memory is fetched first. */
typedef struct {
    char name[64];
    char op[24];
    long long ne[4];
    size_t offset; /* into data, in floats */
} bh_trace_rec;

typedef struct {
    char *names;          /* ",attn_norm,Qcur,...," */
    bh_trace_rec *recs;
    int n_recs, cap_recs;
    float *data;
    size_t used, cap;
    int unsupported;      /* nodes of a type this copier does not widen */
    int status;           /* llama_decode's result, or -1/-2 set below */
    int capturing;
} bh_trace_t;

static int bh_trace_wanted(bh_trace_t *tr, const char *name) {
    char base[80];
    size_t n = strlen(name);
    if (n == 0 || n >= 64) return 0;
    memcpy(base, name, n + 1);
    char *dash = strrchr(base, '-');
    if (dash && dash[1] >= '0' && dash[1] <= '9') {
        char *p = dash + 1;
        while (*p >= '0' && *p <= '9') p++;
        if (*p == 0) *dash = 0;
    }
    char key[84];
    snprintf(key, sizeof key, ",%s,", base);
    return strstr(tr->names, key) != NULL;
}

static float bh_elem_f32(const char *p, enum ggml_type type, int *ok) {
    switch (type) {
        case GGML_TYPE_F32: return *(const float *) p;
        case GGML_TYPE_F16: return ggml_fp16_to_fp32(*(const ggml_fp16_t *) p);
        case GGML_TYPE_BF16: return ggml_bf16_to_fp32(*(const ggml_bf16_t *) p);
        case GGML_TYPE_I32: return (float) *(const int32_t *) p;
        default: *ok = 0; return 0.0f;
    }
}

static bool bh_trace_cb(struct ggml_tensor *t, bool ask, void *ud) {
    bh_trace_t *tr = (bh_trace_t *) ud;
    if (!tr->capturing || !bh_trace_wanted(tr, t->name)) return ask ? false : true;
    if (ask) return true;
    size_t count = (size_t) ggml_nelements(t);
    if (tr->n_recs == tr->cap_recs) {
        int nc = tr->cap_recs ? tr->cap_recs * 2 : 256;
        bh_trace_rec *r = (bh_trace_rec *) realloc(tr->recs, sizeof(bh_trace_rec) * (size_t) nc);
        if (!r) { tr->status = -5; return false; }
        tr->recs = r; tr->cap_recs = nc;
    }
    if (tr->used + count > tr->cap) {
        size_t nc = tr->cap ? tr->cap : (size_t) 1 << 20;
        while (tr->used + count > nc) nc *= 2;
        float *d = (float *) realloc(tr->data, sizeof(float) * nc);
        if (!d) { tr->status = -5; return false; }
        tr->data = d; tr->cap = nc;
    }
    size_t nbytes = ggml_nbytes(t);
    const char *src = (const char *) t->data;
    char *tmp = NULL;
    if (t->buffer && !ggml_backend_buffer_is_host(t->buffer)) {
        tmp = (char *) malloc(nbytes);
        if (!tmp) { tr->status = -5; return false; }
        ggml_backend_tensor_get(t, tmp, 0, nbytes);
        src = tmp;
    }
    int ok = 1;
    float *dst = tr->data + tr->used;
    size_t k = 0;
    for (int64_t i3 = 0; i3 < t->ne[3]; i3++)
        for (int64_t i2 = 0; i2 < t->ne[2]; i2++)
            for (int64_t i1 = 0; i1 < t->ne[1]; i1++)
                for (int64_t i0 = 0; i0 < t->ne[0]; i0++)
                    dst[k++] = bh_elem_f32(src + i0 * t->nb[0] + i1 * t->nb[1] + i2 * t->nb[2] + i3 * t->nb[3], t->type, &ok);
    free(tmp);
    if (!ok) { tr->unsupported++; return true; }
    bh_trace_rec *r = &tr->recs[tr->n_recs++];
    snprintf(r->name, sizeof r->name, "%s", t->name);
    snprintf(r->op, sizeof r->op, "%s", ggml_op_desc(t));
    for (int i = 0; i < 4; i++) r->ne[i] = (long long) t->ne[i];
    r->offset = tr->used;
    tr->used += count;
    return true;
}

/* one forward pass with every tensor named in `names` (comma-separated base names) copied out.
 * decode_last: ids[0..n-2] are decoded first without capture, then ids[n-1] alone at position
 * n-1 through the KV cache, captured. Returns a handle (free with bh_trace_free) or NULL when no
 * context could be made; bh_trace_status says how the decode went (0: ok). */
void *bh_trace(void *hp, const int *ids, int n, int decode_last, const char *names, float *logits_out) {
    bh_handle *h = (bh_handle *) hp;
    bh_trace_t *tr = (bh_trace_t *) calloc(1, sizeof(bh_trace_t));
    if (!tr) return NULL;
    size_t ln = strlen(names);
    tr->names = (char *) malloc(ln + 3);
    snprintf(tr->names, ln + 3, ",%s,", names);
    struct llama_context *ctx = bh_context_cb(h, n, bh_trace_cb, tr);
    if (!ctx) { free(tr->names); free(tr); return NULL; }
    int rc = 0;
    if (decode_last && n > 1) {
        rc = bh_decode(ctx, ids, n - 1, 0, 0);
        tr->capturing = 1;
        if (rc == 0) rc = bh_decode(ctx, ids + n - 1, 1, n - 1, 1);
        if (rc == 0) rc = bh_copy_logits(h, ctx, 1, logits_out);
    } else {
        tr->capturing = 1;
        rc = bh_decode(ctx, ids, n, 0, 1);
        if (rc == 0) rc = bh_copy_logits(h, ctx, n, logits_out);
    }
    llama_free(ctx);
    if (tr->status == 0) tr->status = rc;
    return tr;
}

int bh_trace_status(void *p) { return ((bh_trace_t *) p)->status; }
int bh_trace_count(void *p) { return ((bh_trace_t *) p)->n_recs; }
int bh_trace_unsupported(void *p) { return ((bh_trace_t *) p)->unsupported; }

/* record i: name and op (NUL-terminated, into 64- and 24-byte buffers), ne[4], offset into the data */
int bh_trace_record(void *p, int i, char *name, char *op, long long *ne, long long *offset) {
    bh_trace_t *tr = (bh_trace_t *) p;
    if (i < 0 || i >= tr->n_recs) return -1;
    bh_trace_rec *r = &tr->recs[i];
    memcpy(name, r->name, sizeof r->name);
    memcpy(op, r->op, sizeof r->op);
    for (int k = 0; k < 4; k++) ne[k] = r->ne[k];
    *offset = (long long) r->offset;
    return 0;
}

long long bh_trace_size(void *p) { return (long long) ((bh_trace_t *) p)->used; }

void bh_trace_copy(void *p, float *out) {
    bh_trace_t *tr = (bh_trace_t *) p;
    if (tr->used) memcpy(out, tr->data, sizeof(float) * tr->used);
}

void bh_trace_free(void *p) {
    bh_trace_t *tr = (bh_trace_t *) p;
    if (!tr) return;
    free(tr->names); free(tr->recs); free(tr->data); free(tr);
}

void bh_free(void *hp) {
    bh_handle *h = (bh_handle *) hp;
    if (!h) return;
#ifdef BH_OLD_API
    llama_free_model(h->model);
#else
    llama_model_free(h->model);
#endif
    free(h);
}

/* benchmark primitives (bitnet benchmark --engine libllama:DIR): the worker opens one context,
 * then times each bh_ctx_step call itself, in harness code around the call, so a receipt's
 * per-step timings are the harness's measurements, never figures the engine reports */
void *bh_ctx_new(void *hp, int n_ctx) {
    return bh_context((bh_handle *) hp, n_ctx);
}

/* decode ids[0..n) at positions pos0.. through the context's KV cache (one batch, logits of the
 * last position only); *best = the argmax of those logits. 0 on success */
int bh_ctx_step(void *hp, void *cp, const int *ids, int n, int pos0, int *best) {
    struct llama_context *ctx = (struct llama_context *) cp;
    int rc = bh_decode(ctx, ids, n, pos0, 0);
    if (rc != 0) return rc;
    const float *l = llama_get_logits_ith(ctx, -1);
    if (!l) return -2;
    int nv = bh_n_vocab((bh_handle *) hp), b = 0;
    for (int v = 1; v < nv; v++) if (l[v] > l[b]) b = v;
    *best = b;
    return 0;
}

void bh_ctx_free(void *cp) {
    if (cp) llama_free((struct llama_context *) cp);
}
