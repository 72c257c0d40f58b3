"""Every planted fault (crossval.faults) fails the `exact` gate against the unmodified engine on
every model it changes: prompt positions and teacher-forced decode steps gated separately, and
each layer teacher-forced on the unmodified engine's own layer outputs, at the family bounds
policies/parity.yml holds (set by `python -m crossval.calibrate`), as crossval_model decides.
No C++ needed; the same faults are judged against libllama in tests/test_crossval_libllama.py."""

from __future__ import annotations

import numpy as np
import pytest

from crossval.compare import engine_outputs, gate_family
from crossval.faults import FAULTS, plant
from crossval.layers import engine_l_out, teacher_forced_layers
from crossval.parity import compare, gate_layers

pytestmark = pytest.mark.ac30

PROMPT = [381, 40, 41, 300, 7, 99, 256, 12, 5, 200, 17, 330]
N_DEC = 6
MODELS = {  # (arch, format, numerics profile)
    "f32": ("bitnet", "f32", "llama.cpp"),
    "f16": ("bitnet", "f16", "llama.cpp"),
    "tq2_0": ("bitnet", "tq2_0", "llama.cpp"),
    "i2_s": ("bitnet-b1.58", "i2_s", "bitnet.cpp"),
}  # TQ1_0 and the `reference` profile: in the calibration's fault table and the crossval suite


@pytest.fixture(scope="module")
def clean(bitnet_model_factory):
    from bitnet.model import BitNetModel

    out = {}
    for key, (arch, fmt, numerics) in MODELS.items():
        path = bitnet_model_factory(arch=arch, fmt=fmt, seed=7)
        m = BitNetModel(path, profile=numerics, strict=False)
        first = engine_outputs(m, PROMPT, [], N_DEC)
        forced = engine_outputs(m, PROMPT, first.greedy, 0)
        out[key] = (path, numerics, gate_family(m), first.greedy, forced, engine_l_out(m, PROMPT))
    return out


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("fault", list(FAULTS))
def test_planted_fault_fails_the_exact_gate(clean, model, fault):
    from bitnet.errors import BitNetError
    from bitnet.model import BitNetModel

    path, numerics, family, greedy, ref, l_out = clean[model]
    try:
        with plant(fault):
            m = BitNetModel(path, profile=numerics, strict=False)
            o = engine_outputs(m, PROMPT, greedy, N_DEC)
            layers = teacher_forced_layers(m, PROMPT, l_out)
    except BitNetError as e:  # the engine refusing the model is a caught fault too
        assert "no kernel" in str(e) or "missing" in str(e), e
        return
    if np.array_equal(o.prompt_logits, ref.prompt_logits) and np.array_equal(o.decode_logits, ref.decode_logits):
        pytest.skip(f"{fault} does not change the {model} model")
    if not FAULTS[fault].end_to_end and family != "float":
        pytest.skip(f"{fault} sits below the {family} end-to-end floor and after the last layer; "
                    "tests/test_profile_knobs.py pins it")
    r = compare(o.prompt_logits, ref.prompt_logits, "exact", family=family, greedy_ours=o.greedy, greedy_ref=greedy,
                decode_ours=o.decode_logits, decode_ref=ref.decode_logits, decode_tokens=greedy)
    r = gate_layers(r, layers)
    assert r.verdict == "fail", (fault, model, r.reason)
    if fault == "decode_position_off_by_one":  # invisible in prompt logits: only the decode steps see it
        assert r.first_divergence is None and r.decode_first_divergence is not None, r.reason


def test_the_unmodified_engine_passes_against_itself(clean):
    from bitnet.model import BitNetModel

    for key, (path, numerics, family, greedy, ref, l_out) in clean.items():
        r = compare(ref.prompt_logits, ref.prompt_logits, "exact", family=family, decode_ours=ref.decode_logits,
                    decode_ref=ref.decode_logits, decode_tokens=greedy)
        r = gate_layers(r, teacher_forced_layers(BitNetModel(path, profile=numerics, strict=False), PROMPT, l_out))
        assert r.verdict == "pass", (key, r.reason)
        assert all(x["max_rel_abs"] == 0.0 for x in r.layers), key  # our layer on our own input: bit for bit


def test_faults_restore_the_engine():
    import bitnet.model.bitnet_model as bm

    before = {n: getattr(bm, n) for n in ("rms_norm", "causal_attention", "rope_angles", "rope_neox", "get_profile")}
    with plant("rms_eps_1e-6"), plant("rope_pairing_swapped"), plant("q_f16_rounding_flipped"):
        assert bm.rms_norm is not before["rms_norm"]
    assert {n: getattr(bm, n) for n in before} == before
