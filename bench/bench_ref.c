/* bench/bench_decode.py's timing of a libllama build (upstream llama.cpp or bitnet.cpp's fork):
 * the model is loaded and the context created OUTSIDE the timed region; only the llama_decode
 * calls are timed (the prompt in one batch, then one token per call), as llama-bench does.
 * The K/V cache type and flash attention are set by the caller and reported back, so both
 * sides of a comparison run with the same settings. Compiled against the build's own llama.h;
 * BH_OLD_API selects the fork's older API. */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "llama.h"

static void bb_quiet(enum ggml_log_level level, const char *text, void *user) {
    (void) level; (void) text; (void) user;
}

static double bb_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + 1e-9 * (double) ts.tv_nsec;
}

/* use_mmap: 1 = the file mapped (llama.cpp's default on a CPU), 0 = read into memory
 * (--no-mmap); the bench sets both sides alike (bench_decode.py --weights). The fork's API has
 * the bool use_mmap; upstream replaced it with load_mode (AUTO resolves to MMAP on a CPU). */
void *bb_load(const char *path, int use_mmap) {
    llama_log_set(bb_quiet, NULL);
    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
#ifdef BH_OLD_API
    mp.use_mmap = use_mmap != 0;
    return llama_load_model_from_file(path, mp);
#else
    mp.load_mode = use_mmap ? LLAMA_LOAD_MODE_MMAP : LLAMA_LOAD_MODE_NONE;
    return llama_model_load_from_file(path, mp);
#endif
}

/* kv_f16: 1 = F16 K/V cache, 0 = F32; flash: 0 = off (the only setting compared so far) */
void *bb_context(void *model, int n_ctx, int threads, int kv_f16, int flash) {
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t) n_ctx;
    cp.n_batch = (uint32_t) n_ctx;
    cp.n_ubatch = (uint32_t) n_ctx;
    cp.n_threads = threads;
    cp.n_threads_batch = threads;
    cp.type_k = kv_f16 ? GGML_TYPE_F16 : GGML_TYPE_F32;
    cp.type_v = kv_f16 ? GGML_TYPE_F16 : GGML_TYPE_F32;
#ifdef BH_OLD_API
    cp.flash_attn = flash != 0;
    return llama_new_context_with_model((struct llama_model *) model, cp);
#else
    cp.flash_attn_type = flash ? LLAMA_FLASH_ATTN_TYPE_ENABLED : LLAMA_FLASH_ATTN_TYPE_DISABLED;
    cp.no_perf = 1;
    return llama_init_from_model((struct llama_model *) model, cp);
#endif
}

static int bb_decode(struct llama_context *ctx, struct llama_batch *b, const int *ids, int n, int pos0) {
    for (int i = 0; i < n; i++) {
        b->token[i] = ids[i];
        b->pos[i] = pos0 + i;
        b->n_seq_id[i] = 1;
        b->seq_id[i][0] = 0;
        b->logits[i] = (int8_t) (i == n - 1);
    }
    b->n_tokens = n;
    return llama_decode(ctx, *b);
}

static int bb_argmax(struct llama_context *ctx, int nv) {
    const float *l = llama_get_logits_ith(ctx, -1);
    int best = 0;
    for (int v = 1; v < nv; v++) if (l[v] > l[best]) best = v;
    return best;
}

/* one run on a created context: clear the cache, prefill ids (timed: t[0]), then n_gen greedy
 * single-token decodes (timed each, summed: t[1]); out[n_gen] gets the tokens. 0 on success */
int bb_run(void *model, void *ctxp, const int *ids, int n, int n_gen, int *out, double *t) {
    struct llama_context *ctx = (struct llama_context *) ctxp;
#ifdef BH_OLD_API
    const int nv = llama_n_vocab((struct llama_model *) model);
    llama_kv_cache_clear(ctx);
#else
    const int nv = llama_vocab_n_tokens(llama_model_get_vocab((struct llama_model *) model));
    llama_memory_clear(llama_get_memory(ctx), true);
#endif
    struct llama_batch b = llama_batch_init(n > 1 ? n : 1, 0, 1);
    double t0 = bb_now();
    int rc = bb_decode(ctx, &b, ids, n, 0);
    t[0] = bb_now() - t0;
    t[1] = 0.0;
    for (int g = 0; rc == 0 && g < n_gen; g++) {
        int tok = bb_argmax(ctx, nv);
        out[g] = tok;
        t0 = bb_now();
        rc = bb_decode(ctx, &b, &tok, 1, n + g);
        t[1] += bb_now() - t0;
    }
    llama_batch_free(b);
    return rc;
}

const char *bb_system_info(void) { return llama_print_system_info(); }

void bb_free(void *model, void *ctx) {
    if (ctx) llama_free((struct llama_context *) ctx);
#ifdef BH_OLD_API
    if (model) llama_free_model((struct llama_model *) model);
#else
    if (model) llama_model_free((struct llama_model *) model);
#endif
}
