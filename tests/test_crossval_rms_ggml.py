"""The profile knob rms_ggml against the engines themselves (run with `pytest --crossval
--bitnet-cpp-dir=DIR`, upstream libllama or bitnet.cpp's fork): each of our RMSNorms fed the
engine's own captured input gives the engine's output bit for bit, and the model-definition
form does not (so the check can fail); against the fork every layer is then bit-identical."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.crossval

PROMPT = [381, 40, 41, 300, 7, 99, 256, 12, 5, 200, 17, 330]


@pytest.fixture(scope="module")
def case(bitnet_cpp_dir, bitnet_model_factory):
    """(model path, our profile): TQ2_0 under llama.cpp for upstream, I2_S under bitnet.cpp for
    the fork (the revisions we could build know arch `bitnet`)."""
    from crossval.reference import locate

    api = locate(bitnet_cpp_dir).api
    fmt, profile = ("i2_s", "bitnet.cpp") if api == "bitnet.cpp-fork" else ("tq2_0", "llama.cpp")
    return bitnet_model_factory(arch="bitnet", fmt=fmt, seed=0), profile, api


@pytest.mark.ac38
def test_each_norm_fed_the_engines_input_is_the_engines_output(bitnet_cpp_dir, case):
    from bitnet.model import BitNetModel
    from bitnet.model.ops import rms_norm
    from crossval.trace import capture_libllama, map_reference, worker_records

    path, profile, api = case
    data = capture_libllama(bitnet_cpp_dir, path, PROMPT)
    m = BitNetModel(path, profile=profile)
    vals, _ = map_reference(worker_records(data), str(data.get("api", api)), m.config.arch, len(m.layers),
                            len(PROMPT), len(PROMPT))
    eps, T, last = m.config.rms_eps, len(PROMPT), len(m.layers) - 1
    emb = m.embed(np.asarray(PROMPT, np.int64))
    cases = [((None, "result_norm"), (last, "l_out"), m.output_norm)]
    for i, lay in enumerate(m.layers):
        cases += [((i, "attn_norm"), (i - 1, "l_out") if i else None, lay.attn_norm),
                  ((i, "ffn_norm"), (i, "attn_residual"), lay.ffn_norm),
                  ((i, "attn_sub_norm"), (i, "attn_out"), lay.attn_sub_norm),
                  ((i, "ffn_sub_norm"), (i, "ffn_gated"), lay.ffn_sub_norm)]
    differ = {False: 0, True: 0}
    for out_key, in_key, w in cases:
        assert out_key in vals and (in_key is None or in_key in vals), (out_key, in_key)
        x = (emb if in_key is None else vals[in_key]).reshape(T, -1).astype(np.float32)
        want = vals[out_key].reshape(T, -1).astype(np.float32)
        for form in differ:
            got = rms_norm(x, w, eps, ggml=form)
            n = int((got.view(np.uint32) != want.view(np.uint32)).sum())
            differ[form] += n
            if form:
                assert n == 0, (out_key, n)
    assert differ[False] > 0  # the model-definition form rounds differently: the check has teeth
    m.close()


@pytest.mark.ac38
def test_every_layer_is_the_forks_bit_for_bit(bitnet_cpp_dir, case):
    """With ggml's RMSNorm (and its attention, SiLU and int8 ties) our I2_S layers, teacher-
    forced on the fork's inputs, equal its layers exactly, prompt batch and decode steps."""
    from crossval.compare import crossval_model

    path, profile, api = case
    if api != "bitnet.cpp-fork":
        pytest.skip("needs a bitnet.cpp build as --bitnet-cpp-dir (upstream's projections sum in another order)")
    r = crossval_model(bitnet_cpp_dir, path, PROMPT, profile="exact", numerics=profile, n_greedy=4)
    assert r.verdict == "pass", r.reason
    assert r.layers and r.decode_layers
    assert all(d["max_rel_abs"] == 0.0 for d in r.layers + r.decode_layers), (r.layers, r.decode_layers)
