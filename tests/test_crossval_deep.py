"""The end-to-end statistical bound for deep models (crossval.deep): its verdict on results,
the calibration it was set from (docs/data/parity-deep-calibration.json) agreeing with the
policy, and the harmless perturbations (crossval.perturb) being real but small changes."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from bitnet.cli import IO
from crossval import deep
from crossval.parity import compare

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "docs" / "data" / "parity-deep-calibration.json"

pytestmark = pytest.mark.ac29


def _logits(seed: int, T: int = 6, V: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((T, V)).astype(np.float32) * 4


def test_the_policy_holds_a_bound_for_the_int8_family_and_none_for_others():
    b = deep.deep_bound("int8-act")
    assert b is not None and b["statistic"] in deep.STATISTICS and 0 < b["bound"] < 1
    assert b["calibration"] == "docs/data/parity-deep-calibration.json"
    assert deep.deep_bound("float") is None


def test_judge_result_passes_noise_and_fails_a_systematic_shift():
    b = deep.deep_bound("int8-act")
    ref = _logits(0)
    # noise well under the bound in every position: pass
    small = ref + np.random.default_rng(1).standard_normal(ref.shape).astype(np.float32) * 1e-4
    r = compare(small, ref, "exact", family="int8-act", decode_ours=small[:3], decode_ref=ref[:3])
    d = deep.judge_result(r)
    assert d.verdict == "pass" and set(d.values) == {"prompt", "decode"} and d.bound == b["bound"]
    # a large difference in the decode section only: fail, naming the section
    big = ref[:3] + _logits(2, 3)
    r = compare(small, ref, "exact", family="int8-act", decode_ours=big, decode_ref=ref[:3])
    d = deep.judge_result(r)
    assert d.verdict == "fail" and "decode" in d.reason and "prompt" not in d.reason.split(":")[0]
    # no bound for the family: skipped, saying so
    assert deep.judge_result(compare(small, ref, "exact", family="float")).verdict == "skipped"


def test_non_finite_logits_fail_the_statistical_bound():
    ref = _logits(3)
    bad = ref.copy()
    bad[2, 5] = np.nan
    d = deep.judge_result(compare(bad, ref, "exact", family="int8-act"))
    assert d.verdict == "fail"


def test_the_recorded_calibration_judges_to_the_policy_bound():
    """The bound in policies/parity.yml is the one `python -m crossval.deep_calibrate --report`
    computes from the committed measurements: no correct run over it, every fault that changes
    a model (and that the end-to-end comparison can see) over it."""
    from crossval import deep_calibrate
    from crossval.faults import FAULTS

    out, err = io.StringIO(), io.StringIO()
    assert deep_calibrate.main(["--report", str(DATA)], IO(out, err)) == 0, err.getvalue()
    doc = deep.judge(json.loads(DATA.read_text()))
    b = deep.deep_bound("int8-act")
    assert (doc["statistic"], doc["bound"], doc["margin"]) == (b["statistic"], b["bound"], b["margin"])
    assert doc["false_alarms"] == [] and doc["correct_runs"] >= 40
    kinds = {k.split(" [")[0] for k in doc["correct"]}
    assert {"reference", "perturbation residual_nudge_1e-7", "perturbation rms_norm_float32_sum",
            "perturbation softmax_float64"} <= kinds
    missed = {m.split(" [")[0] for m in doc["missed_faults"]}
    assert all(not FAULTS[m].end_to_end for m in missed), missed
    assert "| fault | pair |" in out.getvalue()


def test_every_perturbation_changes_a_tiny_model_by_rounding_amounts(bitnet_model_factory):
    """Each perturbation is a real change (logits differ) and harmless on a 2-layer F32 model
    (no activation rounding to hide a last-bit change): 1-cos at the float32 rounding level."""
    from bitnet.model import BitNetModel
    from crossval.perturb import PERTURBATIONS, perturb

    path = bitnet_model_factory(arch="bitnet", fmt="f32", seed=7)
    ids = [1, 5, 9, 33, 70, 2, 8]

    def logits(ctx=None):
        from contextlib import nullcontext

        with ctx or nullcontext():
            m = BitNetModel(path, profile="llama.cpp", strict=False)
            c = m.new_cache()
            p = m.forward(np.asarray(ids), c, 0)
            d = m.forward(np.asarray([4]), c, len(ids))  # one single-row step through the KV cache
            m.close()
        return p, d

    base = logits()
    for name in PERTURBATIONS:
        p, d = logits(perturb(name))
        assert not (np.array_equal(p, base[0]) and np.array_equal(d, base[1])), name
        r = compare(p, base[0], "exact", family="float", decode_ours=d, decode_ref=base[1])
        assert 0 < r.worst("one_minus_cos") <= 1e-11 and r.worst("rel_max_abs") <= 1e-5, (name, r.reason)


def test_deep_calibrate_refuses_bad_arguments(tmp_path):
    from crossval import deep_calibrate

    err = io.StringIO()
    assert deep_calibrate.main(["--out", str(tmp_path / "x.json")], IO(io.StringIO(), err)) == 2
    assert deep_calibrate.main(["--out", str(tmp_path / "x.json"), "--pair", "a=/x:llama.cpp:/missing.gguf"],
                               IO(io.StringIO(), err)) == 2
    assert deep_calibrate.main(["--report", str(tmp_path / "missing.json")], IO(io.StringIO(), err)) == 2
    assert "expected NAME=CPP_DIR:NUMERICS:MODEL" in err.getvalue()
