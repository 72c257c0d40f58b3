"""Sub-layer teacher forcing (issue 20): each sub-block of a layer continues from the
reference's own tensor at every boundary, so a one-ulp difference that flips an F16 or int8
rounding step stays in its sub-block; and the calibration's hold-out check. No C++ needed: the
reference here is our own unmodified engine, or a hand-perturbed copy of its tensors."""

from __future__ import annotations

import numpy as np
import pytest

from bitnet.model import record
from crossval import calibrate
from crossval.faults import FAULTS, plant
from crossval.layers import SUBLAYER_OPS, sublayer_forced_layers
from crossval.trace import record_engine

pytestmark = pytest.mark.ac29
PROMPT = [381, 40, 41, 300, 7, 99, 256, 12, 5, 200, 17, 330]


@pytest.fixture(scope="module")
def f16(bitnet_model_factory):
    from bitnet.model import BitNetModel

    path = bitnet_model_factory(arch="bitnet", fmt="f16", seed=7)
    m = BitNetModel(path, profile="llama.cpp", strict=False)
    return m, record_engine(m, PROMPT), path


def test_tap_forced_is_the_identity_without_a_recorder_and_refuses_what_it_cannot_force():
    x = np.ones((2, 3), np.float32)
    assert record.tap_forced("attn_norm", x) is x
    with pytest.raises(ValueError, match="cannot force"):
        with record.recording(forcing={"q_proj": x}):
            pass
    with record.recording(forcing={"attn_norm": np.zeros(5, np.float32)}):
        with pytest.raises(ValueError, match="5 values"):
            record.tap_forced("attn_norm", x)
    with record.recording(forcing={"attn_norm": np.zeros(6, np.float32)}) as rec:
        y = record.tap_forced("attn_norm", x)
    assert y.shape == x.shape and not y.any() and rec.get("attn_norm").all()  # ours recorded, theirs continues


def test_our_own_tensors_force_every_sub_block_bit_for_bit(f16):
    m, ref, _ = f16
    ops: list[dict] = []
    layers = sublayer_forced_layers(m, PROMPT, ref, ops)
    assert [x.layer for x in layers] == [0, 1] and all(x.op in SUBLAYER_OPS for x in layers)
    assert [(o["layer"], o["op"]) for o in ops] == [(i, op) for i in range(2) for op in SUBLAYER_OPS]
    assert all(o["max_rel_abs"] == 0.0 for o in ops), [o for o in ops if o["max_rel_abs"]]


def test_a_perturbed_boundary_shows_only_in_the_sub_block_it_feeds(f16):
    """The reference's attn_norm of layer 0 off by ~1e-3 at one position (as an F16 midpoint
    flip upstream moves a whole step): forced whole-layer, our attention carries it to every
    later position; forced at the sub-block boundaries, only attention's output (attn_out)
    moves, and every sub-block after it is exact again (it starts from the reference's value)."""
    m, ref, _ = f16
    bad = dict(ref)
    a = ref[(0, "attn_norm")].copy()
    a[3] += np.float32(1e-3) * np.abs(a[3]).max()
    bad[(0, "attn_norm")] = a
    ops: list[dict] = []
    sublayer_forced_layers(m, PROMPT, bad, ops)
    moved = {o["op"] for o in ops if o["layer"] == 0 and o["max_rel_abs"] > 0}
    assert moved == {"attn_norm", "attn_out"}, moved  # ours vs the perturbed value, and what it fed
    att = next(o for o in ops if o["layer"] == 0 and o["op"] == "attn_out")
    assert att["median_rel_abs"] > 0  # K/V of position 3 reach every later position of attn_out...
    assert all(o["max_rel_abs"] == 0 for o in ops if o["layer"] == 1)  # ...and nothing past the sub-block


@pytest.mark.parametrize("fault,op", [("rms_eps_1e-6", "attn_norm"), ("q_f16_rounding_flipped", "attn_out"),
                                      ("kv_cache_wrong_dtype", "attn_out"), ("ffn_sub_norm_skipped", "ffn_sub_norm"),
                                      ("weight_scale_off_0.1pct", "attn_o")])
def test_planted_faults_fail_the_sub_layer_gate_at_their_sub_block(f16, fault, op):
    """Against the unmodified engine's tensors, each fault moves its own sub-block's output by
    more than the f16-act sub-layer bounds, in layer 0 already."""
    from bitnet.model import BitNetModel
    from crossval.parity import thresholds

    _, ref, path = f16
    th = thresholds("exact", "f16-act")
    lim = {k: th.get("sub" + pol, th[pol]) for k, pol in calibrate.LAYER_GATED.items()}
    ops: list[dict] = []
    with plant(fault):  # some faults act at load (a profile knob, a norm weight)
        sublayer_forced_layers(BitNetModel(path, profile="llama.cpp", strict=False), PROMPT, ref, ops)
    first = next(o for o in ops if any(o[k] > lim[k] for k in lim))
    assert (first["layer"], first["op"]) == (0, op), (FAULTS[fault].size, first)


def test_holdout_sets_bounds_from_even_seeds_and_counts_odd_seed_alarms():
    def rec(seed, sub, whole):
        return {"pair": "libllama-layers", "format": "f16", "shape": "tiny", "seed": seed, "family": "f16-act",
                "sublayers": dict(zip(calibrate.LAYER_GATED, sub, strict=True)),
                "layers": dict(zip(calibrate.LAYER_GATED, whole, strict=True))}

    e2e = {"one_minus_cos": 1e-8, "kl": 1e-8, "rel_max_abs": 1e-4, "median_one_minus_cos": 1e-8,
           "median_rel_abs": 1e-5, "top1_flips": 0, "nonfinite": False}
    records = [{**rec(s, (2e-7, 1e-14, 1e-7), (1e-4, 1e-8, 1e-7)), "pair": "libllama", "prompt": e2e, "decode": e2e}
               for s in range(4)]
    for r in records:
        del r["sublayers"], r["layers"]
    records += [rec(100, (2e-7, 1e-14, 1e-7), (1e-4, 1e-8, 1e-7)), rec(102, (3e-7, 1e-14, 1.2e-7), (2e-4, 2e-8, 1e-7)),
                # odd: within 1.5x of the even floor under sub-layer forcing; forced whole, an F16
                # midpoint flip moves every later position (median 2.4e-4): a whole-layer alarm
                rec(101, (4e-7, 1.2e-14, 1.5e-7), (4e-4, 6e-8, 2.4e-4)),
                rec(103, (5e-6, 1e-14, 1e-7), (1e-4, 1e-8, 1e-7))]  # over 10x the even max: an alarm
    h = calibrate.holdout(records, dict(calibrate.DEFAULT_MARGIN))
    assert h["train_runs"] == 4 and h["test_runs"] == 4  # seeds 0, 2, 100, 102 | 1, 3, 101, 103
    assert h["false_alarms"] == 1 and h["examples"][0]["seed"] == 103 and h["examples"][0]["section"] == "sublayers"
    assert h["whole_layer_runs"] == 2 and h["whole_layer_false_alarms"] == 1
    assert h["whole_layer_examples"][0]["seed"] == 101
    s = calibrate.summarize(records, dict(calibrate.DEFAULT_MARGIN))["f16-act"]
    # sub-layer bounds: SUBLAYER_MARGIN (a float floor, shape-dependent); whole layers: the
    # median keeps the family's margin, the single-position bounds get LAYER_MAX_MARGIN
    assert s["bounds"]["sublayer_max_median_rel_abs"] == pytest.approx(calibrate.SUBLAYER_MARGIN * 1.5e-7)
    assert s["bounds"]["sublayer_max_rel_abs"] == pytest.approx(10 * 5e-6)
    assert s["bounds"]["layer_max_median_rel_abs"] == pytest.approx(1.5 * 2.4e-4, rel=0.02)  # two significant digits
