"""Synthetic models: deterministic, structurally real, loadable by gguf-py."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from bitnet.gguf import GGUFReader
from bitnet.synth import PRESETS, projection_shapes, synthesize, ternary_weight, weight_scale


def _sha(p):
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a = synthesize(tmp_path / "a.gguf", seed=1)
    b = synthesize(tmp_path / "b.gguf", seed=1)
    c = synthesize(tmp_path / "c.gguf", seed=2)
    assert _sha(a) == _sha(b) != _sha(c)


@pytest.mark.parametrize("arch", ["bitnet-b1.58", "bitnet"])
@pytest.mark.parametrize("fmt", ["f32", "f16"])
def test_structure(tmp_path, arch, fmt):
    p = synthesize(tmp_path / "m.gguf", arch=arch, fmt=fmt, seed=3)
    s = PRESETS["tiny"]
    with GGUFReader(p) as r:
        assert r.architecture == arch
        assert r.get(f"{arch}.block_count") == s.n_layer
        assert r.get(f"{arch}.attention.head_count_kv") == s.n_head_kv
        names = {t.name for t in r.tensors}
        for i in range(s.n_layer):
            for n in ("attn_norm", "attn_sub_norm", "ffn_norm", "ffn_sub_norm"):
                assert f"blk.{i}.{n}.weight" in names
            for proj, (out_f, in_f) in projection_shapes(s).items():
                t = r.tensor(f"blk.{i}.{proj}.weight")
                assert t.shape == (in_f, out_f)
                assert t.type_name == fmt.upper()
                w = r.array(t).astype(np.float32)
                tern, scale = ternary_weight(3, t.name, out_f, in_f)
                if arch == "bitnet-b1.58":
                    expected = tern.astype(np.float32) * np.float32(scale)
                    np.testing.assert_allclose(w, expected, rtol=1e-3 if fmt == "f16" else 0)
                else:
                    np.testing.assert_array_equal(w, tern.astype(np.float32))
                    assert r.array(f"blk.{i}.{proj}.scale")[0] == np.float32(weight_scale(3, t.name, in_f))
        assert len(r.get("tokenizer.ggml.tokens")) == r.get(f"{arch}.vocab_size")


def test_weights_are_ternary_with_zeros(tmp_path):
    t, s = ternary_weight(0, "x", 64, 256)
    assert set(np.unique(t).tolist()) == {-1, 0, 1}
    assert 0.25 < (t == 0).mean() < 0.42
    assert s == weight_scale(0, "x", 256)


def test_vocab_copied_from_a_vocab_gguf(tmp_path):
    from tests.test_gguf_io import vocab_dir

    vd = vocab_dir()
    if vd is None:
        pytest.skip("llama.cpp vocab files not found: set BITNET_VOCAB_DIR")
    p = synthesize(tmp_path / "v.gguf", vocab_gguf=vd / "ggml-vocab-llama-bpe.gguf", seed=0)
    with GGUFReader(p) as r, GGUFReader(vd / "ggml-vocab-llama-bpe.gguf") as v:
        assert list(r.get("tokenizer.ggml.tokens")) == list(v.get("tokenizer.ggml.tokens"))
        assert r.get("tokenizer.ggml.pre") == "llama-bpe"
        assert r.tensor("token_embd.weight").shape == (256, 128256)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown arch"):
        synthesize(tmp_path / "x.gguf", arch="llama")
    with pytest.raises(ValueError, match="unknown weight format"):
        synthesize(tmp_path / "x.gguf", fmt="q4_0")
    with pytest.raises(ValueError, match="unknown preset"):
        synthesize(tmp_path / "x.gguf", preset="huge")
    assert not (tmp_path / "x.gguf").exists()


def test_gguf_py_reads_synthetic_models(tmp_path):
    gguf = pytest.importorskip("gguf")
    p = synthesize(tmp_path / "m.gguf", arch="bitnet", fmt="f16")
    g = gguf.GGUFReader(str(p))
    assert g.fields["general.architecture"].contents() == "bitnet"
    with GGUFReader(p) as r:
        assert [t.name for t in g.tensors] == [t.name for t in r.tensors]


def test_builtin_vocab_is_padded_to_the_embedding_rows(tmp_path):
    """A shape with more embedding rows than the built-in vocab (the 2B-4T shape: 128256) gets
    reserved control tokens up to that count, as LLaMA 3 does: llama.cpp takes n_vocab from the
    token list and refused the 2B-4T-shape synth model before ('token_embd.weight has wrong
    shape; expected 2560, 384')."""
    from dataclasses import replace

    from bitnet.synth.model import PRESETS

    p = synthesize(tmp_path / "m.gguf", preset=replace(PRESETS["tiny"], vocab_size=1000), arch="bitnet",
                   fmt="tq2_0", seed=0)
    with GGUFReader(p) as r:
        toks, types = r.get("tokenizer.ggml.tokens"), r.get("tokenizer.ggml.token_type")
        assert len(toks) == len(types) == 1000 == r.tensor("token_embd.weight").shape[1]
        assert toks[-1] == f"<|reserved_special_token_{1000 - 384 - 1}|>" and types[-1] == 3
