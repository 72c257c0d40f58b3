"""Against upstream libllama (run with `pytest --crossval --bitnet-cpp-dir=DIR`): our engine's
logits for synthetic `bitnet` models in every format upstream loads, in strict mode; tokenizer
parity; and gates with teeth (planted faults must fail, naming the first diverging position)."""

from __future__ import annotations

import numpy as np
import pytest

from crossval.compare import crossval_model, tokenizer_parity

pytestmark = pytest.mark.crossval

PROMPT = [381, 40, 41, 300, 7, 99, 256, 12, 5, 200, 17, 330]
UPSTREAM_FORMATS = ["f32", "f16", "tq1_0", "tq2_0"]


@pytest.fixture(scope="module")
def reference_api(bitnet_cpp_dir):
    from crossval.reference import locate

    return locate(bitnet_cpp_dir).api


@pytest.fixture(scope="module")
def upstream(reference_api):
    if reference_api != "upstream":
        pytest.skip("these formats need upstream llama.cpp; the reference given is bitnet.cpp's fork")


@pytest.fixture(scope="module")
def models(bitnet_model_factory, upstream):
    return {fmt: bitnet_model_factory(arch="bitnet", fmt=fmt, seed=7) for fmt in UPSTREAM_FORMATS}


@pytest.mark.ac7
@pytest.mark.ac16
@pytest.mark.parametrize("fmt", UPSTREAM_FORMATS)
def test_every_upstream_format_passes_the_exact_gate_in_strict_mode(bitnet_cpp_dir, models, fmt, monkeypatch, tmp_path):
    monkeypatch.setenv("BITNET_STRICT_MODE", "1")
    r = crossval_model(bitnet_cpp_dir, models[fmt], PROMPT, profile="exact", numerics="llama.cpp",
                       n_greedy=8, strict=True, receipt=tmp_path / "parity.json")
    assert r.verdict == "pass", r.reason
    assert min(p.cosine for p in r.positions) >= 0.9999 and r.greedy_match == 1.0
    assert (tmp_path / "parity.json").is_file()


@pytest.mark.ac16
def test_f32_logits_within_1e_4_relative(bitnet_cpp_dir, models):
    """With F32 weights the only differences are float summation orders."""
    from bitnet.model import BitNetModel
    from crossval.runner import run_reference

    ref = run_reference(bitnet_cpp_dir, models["f32"], ids=PROMPT)
    assert ref.ok, ref.error
    m = BitNetModel(models["f32"], profile="llama.cpp")
    ours = m.forward(np.array(PROMPT), m.new_cache(), 0)
    rel = np.abs(ours - ref.data["logits"]).max() / np.abs(ref.data["logits"]).max()
    assert rel < 1e-4, rel


@pytest.mark.ac7
@pytest.mark.ac16
@pytest.mark.parametrize("fmt", ["i2_s", "f32"])
def test_bitnet_cpp_fork_passes_the_exact_gate(bitnet_cpp_dir, reference_api, bitnet_model_factory, fmt, monkeypatch):
    """Against bitnet.cpp's llama.cpp fork (pass its checkout as --bitnet-cpp-dir): I2_S under
    the bitnet.cpp numerics profile. The fork revisions we could build know arch `bitnet`."""
    if reference_api != "bitnet.cpp-fork":
        pytest.skip("needs a bitnet.cpp build as --bitnet-cpp-dir")
    monkeypatch.setenv("BITNET_STRICT_MODE", "1")
    model = bitnet_model_factory(arch="bitnet", fmt=fmt, seed=3)
    r = crossval_model(bitnet_cpp_dir, model, PROMPT, profile="exact", numerics="bitnet.cpp", n_greedy=8, strict=True)
    assert r.verdict == "pass", r.reason
    # the model's reference math is a different scheme: the same gate must catch it
    assert crossval_model(bitnet_cpp_dir, model, PROMPT, profile="exact", numerics="reference", strict=True).verdict == "fail"


@pytest.mark.ac5
def test_tokenizer_parity_on_generated_strings(bitnet_cpp_dir, bitnet_model_factory):
    from pathlib import Path

    vocab = Path(bitnet_cpp_dir) / "vocab" / "ggml-vocab-llama-bpe.gguf"
    if not vocab.is_file():
        pytest.skip(f"{vocab} not found (crossval.setup copies it)")
    model = bitnet_model_factory(arch="bitnet", fmt="f16", seed=1, vocab_gguf=str(vocab))
    rng = np.random.default_rng(0)
    alphabet = list("abcdefghijklmnopqrstuvwxyz ABCDEFGHIJ0123456789.,;:!?'\"()[]{}<>-_\n\t") + \
        ["é", "ß", "中", "文", "😀", "🦙", "ñ", "ü", "\u00a0", "  ", "'s", "'ll", "<|eot_id|>"]
    texts = ["".join(rng.choice(alphabet, size=rng.integers(1, 40))) for _ in range(300)]
    for parse_special in (False, True):
        bad, ours_n, ref_n = tokenizer_parity(bitnet_cpp_dir, model, texts, parse_special=parse_special)
        assert bad == [], [texts[i] for i in bad[:5]]
        assert ours_n == ref_n == 128256


# -- gates with teeth ------------------------------------------------------------------------
def _interleaved_rope(x, cos, sin):
    """GPT-J pairing (i, i+1) instead of NEOX (i, i+d/2): the classic rope bug."""
    x0, x1 = x[..., 0::2], x[..., 1::2]
    c, s = cos[:, None, :], sin[:, None, :]
    out = np.empty_like(x)
    out[..., 0::2], out[..., 1::2] = x0 * c - x1 * s, x0 * s + x1 * c
    return out


def plant(monkeypatch, fault: str) -> None:
    import bitnet.model.bitnet_model as bm
    from bitnet.quant import tq

    if fault == "rope_pairing_swapped":
        monkeypatch.setattr(bm, "rope_neox", _interleaved_rope)
    elif fault == "attn_sub_norm_skipped":
        real = bm.rms_norm

        def rms(x, w, eps):
            if w.shape[0] == x.shape[-1] and getattr(rms, "skip", None) is not None and w is rms.skip.get(id(w)):
                return x
            return real(x, w, eps)

        rms.skip = {}
        orig_layer = bm.BitNetModel._layer

        def layer(self, i):
            lay = orig_layer(self, i)
            rms.skip[id(lay.norms["attn_sub_norm"])] = lay.norms["attn_sub_norm"]
            return lay

        monkeypatch.setattr(bm, "rms_norm", rms)
        monkeypatch.setattr(bm.BitNetModel, "_layer", layer)
    elif fault == "weight_scale_dropped":
        orig_layer = bm.BitNetModel._layer

        def layer(self, i):  # every projection loses its separate blk.N.<proj>.scale
            import dataclasses

            lay = orig_layer(self, i)
            linears = {f.name: getattr(lay, f.name) for f in dataclasses.fields(lay)}
            return dataclasses.replace(lay, **{k: dataclasses.replace(v, scale=None)
                                               for k, v in linears.items() if isinstance(v, bm.Linear)})

        monkeypatch.setattr(bm.BitNetModel, "_layer", layer)
    elif fault == "tq2_0_bit_order_reversed":
        real = tq.tq2_0_codes

        def reversed_codes(raw, n):
            codes, d = real(raw, n)
            return codes.reshape(-1, 2, 4, 32)[:, :, ::-1, :].reshape(-1, 256).copy(), d

        monkeypatch.setattr(tq, "tq2_0_codes", reversed_codes)
    elif fault == "kv_position_off_by_one":
        real = bm.causal_attention
        monkeypatch.setattr(bm, "causal_attention", lambda q, k, v, pos0, **kw: real(q, k, v, pos0 + 1, **kw))
    else:
        raise AssertionError(fault)


FAULTS = ["rope_pairing_swapped", "attn_sub_norm_skipped", "weight_scale_dropped", "tq2_0_bit_order_reversed",
          "kv_position_off_by_one"]


@pytest.mark.ac16
@pytest.mark.parametrize("fault", FAULTS)
def test_planted_faults_fail_and_name_the_first_divergence(bitnet_cpp_dir, models, monkeypatch, fault):
    plant(monkeypatch, fault)
    r = crossval_model(bitnet_cpp_dir, models["tq2_0"], PROMPT, profile="exact", numerics="llama.cpp", n_greedy=4)
    assert r.verdict == "fail", (fault, r.reason)
    assert r.first_divergence is not None and f"position {r.first_divergence} diverges" in r.reason
