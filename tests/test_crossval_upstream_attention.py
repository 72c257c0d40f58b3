"""The `llama.cpp` profile's attention against upstream libllama itself (`pytest --crossval
--bitnet-cpp-dir=DIR`, DIR an upstream llama.cpp build such as crossval.setup's 0.3.36).

The shim copies out libllama's own post-rope Q and K, V, and the graph's `kq`, `kq_soft_max`
and `kqv_out` (crossval/trace.py's capture). bitnet.model.ggml_attention, build "llama.cpp",
fed libllama's Q/K/V must give those three tensors bit for bit: every layer, head and position,
for a prompt batch and for a one-token decode step (its cache holding the prefix batch's K/V),
on the tiny TQ2_0 model and on F32 shapes that reach the other code paths (one head: tinyBLAS
Q.K; head_dim 34/40/46: ggml_vec_dot_f32's tails and, at 34 and 46, vec_dot P.V). The 2B-4T
shape (head_dim 128, GQA 4:1) runs under -m slow."""

from __future__ import annotations

import numpy as np
import pytest

from bitnet.model import record
from bitnet.model.ggml_attention import attention
from bitnet.synth.model import ModelShape

pytestmark = [pytest.mark.crossval, pytest.mark.ac32, pytest.mark.ac30]

PROMPT = [381, 40, 41, 300, 7, 99, 256, 12, 5, 200, 17, 330]
SHAPES = {
    "one-head": ModelShape(n_embd=256, n_ff=512, n_layer=2, n_head=1, n_head_kv=1, n_ctx=256),
    "hd40": ModelShape(n_embd=240, n_ff=512, n_layer=2, n_head=6, n_head_kv=2, n_ctx=256),
    "hd34": ModelShape(n_embd=68, n_ff=128, n_layer=2, n_head=2, n_head_kv=1, n_ctx=256),
    "hd46": ModelShape(n_embd=92, n_ff=128, n_layer=2, n_head=2, n_head_kv=1, n_ctx=256),
}


def _upstream(bitnet_cpp_dir):
    from crossval.reference import locate

    if locate(bitnet_cpp_dir).api != "upstream":
        pytest.skip("the upstream attention emulation is checked against an upstream llama.cpp build")


def _captures(cpp_dir, path) -> dict[tuple[str, str, str], np.ndarray]:
    """{(run, name, op): array in ggml's reversed-ne order}: run "prompt" (all ids in one batch),
    "prefix" (all but the last), "decode" (the last id as a one-token step after the prefix)."""
    from crossval.trace import capture_libllama, worker_records

    out = {}
    for run, ids, dl in (("prompt", PROMPT, False), ("prefix", PROMPT[:-1], False), ("decode", PROMPT, True)):
        for r in worker_records(capture_libllama(cpp_dir, path, ids, decode_last=dl)):
            out[(run, r["name"], r["op"])] = np.asarray(r["data"], np.float32).reshape(r["ne"][::-1])
    return out


def _ours(q, k, v, pos0):
    with record.recording() as rec:
        o = attention(q, k, v, pos0, build="llama.cpp")
    taps = {key[1]: a for key, a in rec.by_key().items()}
    return taps["attn_scores"], taps["attn_probs"], o


def _check(cap: dict, n_layer: int) -> None:
    def g(run, name, op):
        return cap[(run, name, op)][0]

    for layer in range(n_layer):
        q, k, v = (g("prompt", f"{n}-{layer}", op) for n, op in (("Qcur", "ROPE"), ("Kcur", "ROPE"), ("Vcur", "RESHAPE")))
        t = len(q)
        sc, pr, o = _ours(q, k.transpose(1, 0, 2), v.transpose(1, 0, 2), 0)
        ref_sc = g("prompt", f"kq-{layer}", "MUL_MAT")[:, :, :t].transpose(1, 0, 2)  # [T, H, S]
        ref_pr = g("prompt", f"kq_soft_max-{layer}", "SOFT_MAX")[:, :, :t].transpose(1, 0, 2)
        np.testing.assert_array_equal(sc, ref_sc, err_msg=f"prompt attn_scores, layer {layer}")
        np.testing.assert_array_equal(pr, ref_pr, err_msg=f"prompt attn_probs, layer {layer}")
        np.testing.assert_array_equal(o, g("prompt", f"kqv_out-{layer}", "CONT").reshape(t, -1),
                                      err_msg=f"prompt attn_out, layer {layer}")
        # the decode step: the cache holds the prefix batch's K/V, then the step's own
        kp, vp = g("prefix", f"Kcur-{layer}", "ROPE"), g("prefix", f"Vcur-{layer}", "RESHAPE")
        q1, k1, v1 = (g("decode", f"{n}-{layer}", op) for n, op in (("Qcur", "ROPE"), ("Kcur", "ROPE"),
                                                                     ("Vcur", "RESHAPE")))
        K = np.concatenate([kp, k1]).transpose(1, 0, 2)
        V = np.concatenate([vp, v1]).transpose(1, 0, 2)
        s = K.shape[1]
        sc, pr, o = _ours(q1, K, V, s - 1)
        np.testing.assert_array_equal(sc, g("decode", f"kq-{layer}", "MUL_MAT")[:, :, :s].transpose(1, 0, 2),
                                      err_msg=f"decode attn_scores, layer {layer}")
        np.testing.assert_array_equal(pr, g("decode", f"kq_soft_max-{layer}", "SOFT_MAX")[:, :, :s].transpose(1, 0, 2),
                                      err_msg=f"decode attn_probs, layer {layer}")
        np.testing.assert_array_equal(o, g("decode", f"kqv_out-{layer}", "CONT").reshape(1, -1),
                                      err_msg=f"decode attn_out, layer {layer}")


def test_tiny_tq2_0_attention_is_upstreams_bit_for_bit(bitnet_cpp_dir, bitnet_model_factory):
    _upstream(bitnet_cpp_dir)
    path = bitnet_model_factory(arch="bitnet", fmt="tq2_0", seed=7)
    cap = _captures(bitnet_cpp_dir, path)
    _check(cap, 2)
    # teeth: NumPy/BLAS float attention on the same inputs misses bits somewhere
    from bitnet.model.ops import causal_attention

    q, k, v = (cap[("prompt", n, op)][0] for n, op in (("Qcur-0", "ROPE"), ("Kcur-0", "ROPE"), ("Vcur-0", "RESHAPE")))
    plain = causal_attention(q, k.transpose(1, 0, 2), v.transpose(1, 0, 2), 0)
    assert not np.array_equal(plain, cap[("prompt", "kqv_out-0", "CONT")][0].reshape(len(q), -1))


@pytest.mark.parametrize("shape", list(SHAPES))
def test_other_code_paths_are_upstreams_bit_for_bit(bitnet_cpp_dir, bitnet_model_factory, shape):
    _upstream(bitnet_cpp_dir)
    path = bitnet_model_factory(preset=SHAPES[shape], arch="bitnet", fmt="f32", seed=3)
    _check(_captures(bitnet_cpp_dir, path), SHAPES[shape].n_layer)


@pytest.mark.slow
def test_2b_4t_shape_attention_is_upstreams_bit_for_bit(bitnet_cpp_dir, bitnet_model_factory):
    _upstream(bitnet_cpp_dir)
    path = bitnet_model_factory(preset="2b-4t-shape", arch="bitnet", fmt="tq2_0", seed=0)
    _check(_captures(bitnet_cpp_dir, path), 30)
