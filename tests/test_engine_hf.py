"""The hf: engine (AC21): HF transformers BitNetForCausalLM with offline BitLinear, built from
a GGUF's own weights or loaded from an HF checkpoint folder, is an independent oracle for our
`reference` numerics profile. Skipped with the reason without the [hf] extra."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bitnet.engines import open_engine

pytest.importorskip("torch", reason="the hf: engine needs the [hf] extra: pip install torch==2.13.0; pip install transformers safetensors")
pytest.importorskip("transformers", reason="the hf: engine needs the [hf] extra: pip install transformers safetensors")

from crossval.pair import compare_engines  # noqa: E402

PROMPT = [381, 40, 41, 300, 7, 99, 256, 12, 5, 200, 17, 330]
pytestmark = [pytest.mark.ac21, pytest.mark.ac16]


@pytest.fixture(scope="module")
def hf():
    return open_engine("hf:")


@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow)])
def test_reference_profile_passes_exact_against_hf_on_i2s(hf, bitnet_model_factory, seed):
    """Seeds 1 and 2 run with -m slow (seed 1 also passes exact in the checkpoint test below)."""
    model = bitnet_model_factory(arch="bitnet-b1.58", fmt="i2_s", seed=seed)
    c = compare_engines(open_engine("reference:reference"), hf, model, PROMPT, gate="exact", n_greedy=4)
    assert c.verdict == "pass", c.result.reason
    assert c.result.greedy_match == 1.0 and len(c.result.layers) == 2 and c.result.family == "int8-act"
    assert c.reference.numerics == "reference" and "transformers" in c.reference.version


def test_bitnet_cpp_profile_shows_its_difference(hf, bitnet_model_factory):
    """F16 KV cache, F16 Q and bitnet.cpp's activation scheme against HF's float32 math: the
    documented profile difference is visible end to end (~20x the reference profile's distance
    from HF, yet inside the int8-act end-to-end floor, which rounding flips growing through the
    layers set) and the `exact` gate FAILS it through the per-layer teacher-forced gate: layer 0,
    fed HF's own input, is orders of magnitude over the per-layer median bound."""
    model = bitnet_model_factory(arch="bitnet-b1.58", fmt="i2_s", seed=0)
    c = compare_engines(open_engine("reference:bitnet.cpp"), hf, model, PROMPT, gate="exact", n_greedy=0)
    base = compare_engines(open_engine("reference:reference"), hf, model, PROMPT, gate="exact", n_greedy=0)
    assert c.verdict == "fail" and c.result.layer_first_divergence == 0, c.result.reason
    assert "layer 0 diverges" in c.result.reason
    assert base.verdict == "pass" and len(base.result.layers) == 2, base.result.reason
    worst = min(p.cosine for p in c.result.positions)
    assert 0.99 < worst < 0.9999, worst
    assert c.result.worst("one_minus_cos") > 10 * base.result.worst("one_minus_cos"), (c.result.reason, base.result.reason)
    lay = max(x["median_rel_abs"] for x in c.result.layers)
    assert lay > 1000 * max(x["median_rel_abs"] for x in base.result.layers), (c.result.layers, base.result.layers)
    assert compare_engines(open_engine("reference:bitnet.cpp"), hf, model, PROMPT, gate="cross", n_greedy=0).verdict == "pass"


@pytest.mark.slow
@pytest.mark.ac37
def test_a_600_token_prompt_passes_exact_against_hf(hf, tmp_path):
    """The red of issue 12: past position 275 every end-to-end position moved (~2e-5 1-cos) and
    a near-tied top-1 pair tipped at 335. Not HF's float32 rope angles (computing ours HF's way
    changes nothing): one int8 rounding flip at layer 0 position 275, carried to every later
    position by attention. Each layer, fed HF's input, stays at the rounding floor."""
    import numpy as np

    from bitnet.synth import PRESETS, synthesize

    model = synthesize(tmp_path / "m.gguf", preset=replace(PRESETS["tiny"], n_ctx=1024), arch="bitnet-b1.58",
                       fmt="f32", seed=11)
    ids = np.random.default_rng(600).integers(3, 256, 600).tolist()
    c = compare_engines(hf, open_engine("reference:reference"), model, ids, n_greedy=0)
    assert c.verdict == "pass", c.result.reason
    # sub-layer forcing (every sub-block on HF's own tensors): the flip no longer spreads through
    # attention (whole layers forced: 1-cos 1.3e-4 at one position, median 4.8e-7); what is left
    # is float summation order (the attention output's median ~1.2e-6 over 600 positions) and
    # the odd int8 tie that HF's scale, 127 * (1/max) in float32, rounds otherwise than ours
    assert all(x["op"] for x in c.result.layers), c.result.layers
    assert max(x["max_one_minus_cos"] for x in c.result.layers) < 1e-5
    assert max(x["median_rel_abs"] for x in c.result.layers) < 3e-6


@pytest.mark.ac37
def test_per_layer_gate_runs_either_direction_and_names_it(hf, bitnet_model_factory):
    """hf: can both capture and force its layers: as the engine under test its own layers run
    on our inputs; as the reference, ours run on its inputs. Both directions judge the same
    per-layer difference and pass for the `reference` profile."""
    model = bitnet_model_factory(arch="bitnet-b1.58", fmt="i2_s", seed=0)
    a = compare_engines(hf, open_engine("reference:reference"), model, PROMPT, n_greedy=0)
    b = compare_engines(open_engine("reference:reference"), hf, model, PROMPT, n_greedy=0)
    assert a.verdict == b.verdict == "pass", (a.result.reason, b.result.reason)
    # ours forces its sub-blocks on hf:'s named tensors (hooks on transformers' modules), in
    # either role; hf: only captures them
    assert "the reference's sub-blocks on the engine's tensors" in a.result.reason
    assert "the engine's sub-blocks on the reference's tensors" in b.result.reason
    assert len(a.result.layers) == len(b.result.layers) == 2


def test_hf_checkpoint_folder(hf, bitnet_model_factory, tmp_path):
    """hf:DIR loads config.json + safetensors offline; here the folder is the GGUF-built model
    saved by transformers itself."""
    from bitnet.engines.hf import build_from_gguf

    model = bitnet_model_factory(arch="bitnet-b1.58", fmt="i2_s", seed=1)
    build_from_gguf(model).save_pretrained(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "config.json").is_file() and list((tmp_path / "ckpt").glob("*.safetensors"))
    e = open_engine(f"hf:{tmp_path / 'ckpt'}")
    c = compare_engines(e, open_engine("reference:reference"), model, PROMPT, gate="exact", n_greedy=4)
    assert c.verdict == "pass", c.result.reason
    assert "checkpoint" in c.engine.build


def test_hf_refuses_what_it_cannot_hold(hf, bitnet_model_factory):
    c = compare_engines(hf, open_engine("reference"), bitnet_model_factory(arch="bitnet-b1.58", fmt="qk256", seed=0),
                        PROMPT, n_greedy=0)
    assert c.verdict == "error" and "the hf: engine reads" in c.result.reason
