"""bitnet.cpp's fork on the shape of a file its own converter makes from a 1bitLLM-style
checkpoint (run with `pytest --crossval --bitnet-cpp-dir=DIR`, DIR a bitnet.cpp build):
6 heads / 2 KV heads, head_dim 128, rope base 1e4, I2_S. With head_dim 128 the attention is
sharp enough that one-ulp differences (q.k summation order, the softmax's exp and division,
the rope's fused multiply-adds) flipped int8 roundings after position 0: cosine 0.99997 on a
converter-made file. The bitnet.cpp profile now computes those ops as ggml does
(tests/test_ggml_numerics.py pins each against bitnet.cpp's own bits), so the exact gate
holds in both prompt modes, every layer bit-identical."""

from __future__ import annotations

import pytest

from crossval.compare import crossval_model

pytestmark = pytest.mark.crossval

PROMPT = [381, 40, 41, 300, 7, 99, 256, 12, 5, 200, 17, 330, 64, 65]


@pytest.mark.parametrize("mode", ["batch", "stepwise"])
def test_converter_shaped_model_passes_the_exact_gate(bitnet_cpp_dir, bitnet_model_factory, mode):
    from bitnet.synth.model import ModelShape
    from crossval.reference import locate
    from crossval.tl_build import tl_build

    ref = locate(bitnet_cpp_dir)
    if ref.api != "bitnet.cpp-fork":
        pytest.skip("needs a bitnet.cpp build as --bitnet-cpp-dir")
    if tl_build(ref) is not None:
        pytest.skip(f"{ref.root} is a TL build: it loads no `.scale` tensors, which this I2_S `bitnet` model has")
    shape = ModelShape(n_embd=768, n_ff=1024, n_layer=2, n_head=6, n_head_kv=2, n_ctx=256, rope_theta=10000.0)
    model = bitnet_model_factory(preset=shape, arch="bitnet", fmt="i2_s", seed=5)
    r = crossval_model(bitnet_cpp_dir, model, PROMPT, profile="exact", numerics="bitnet.cpp", n_greedy=4,
                       strict=True, prompt_mode=mode)
    assert r.verdict == "pass", r.reason
    if mode == "batch":
        assert r.layers and max(x["max_rel_abs"] for x in r.layers) < 1e-6
