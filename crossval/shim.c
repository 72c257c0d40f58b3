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
int bh_decode_steps(void *hp, const int *ids, int n, int n_steps, int *greedy, float *out) {
    bh_handle *h = (bh_handle *) hp;
    struct llama_context *ctx = bh_context(h, n + n_steps);
    if (!ctx) return -1;
    int nv = bh_n_vocab(h);
    int rc = bh_decode(ctx, ids, n, 0, 0);
    const float *l = rc == 0 ? llama_get_logits_ith(ctx, -1) : NULL;
    for (int s = 0; rc == 0 && s < n_steps; s++) {
        if (!l) { rc = -2; break; }
        int best = 0;
        for (int v = 1; v < nv; v++) if (l[v] > l[best]) best = v;
        greedy[s] = best;
        rc = bh_decode(ctx, &best, 1, n + s, 0);
        if (rc != 0) break;
        l = llama_get_logits_ith(ctx, -1);
        if (!l) { rc = -2; break; }
        memcpy(out + (size_t) s * nv, l, sizeof(float) * (size_t) nv);
    }
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
