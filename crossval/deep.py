"""The end-to-end comparison of deep models under a calibrated statistical bound.

At the 2B-4T shape (30 layers of random ternary weights) a rounding-level difference between
two correct engines -- one int8 activation rounding flip, a sum in another order -- grows
chaotically through the layers, so end-to-end logits of correct pairs sit near 1-cos 5e-4 and
cannot be gated at the rounding floor (issue 20, item 7). The per-layer teacher-forced gate is
the `exact` verdict there. Beside it this module reports the end-to-end comparison judged by a
*statistical* bound: a statistic of the per-position metrics, per section (prompt positions,
teacher-forced decode steps), against a bound set from the measured distribution of correct
pairs at that shape (ours against upstream llama.cpp, against bitnet.cpp, and ours against
ours under harmless perturbations, crossval.perturb) with a stated margin, checked to fail
the planted faults that change the model (crossval.faults).

The bound and its calibration live in policies/parity.yml (`deep`); the measurements in
docs/data/parity-deep-calibration.json, made by `python -m crossval.deep_calibrate`
(docs/reference/parity.md, "The 2B-4T shape").
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

import numpy as np

from bitnet.errors import ConfigError
from bitnet.files.atomic import atomic_write_text

#: statistics of one section's per-position metrics the calibration compares (name -> (metric, reducer))
STATISTICS = {
    "median_one_minus_cos": ("one_minus_cos", "median"),
    "max_one_minus_cos": ("one_minus_cos", "max"),
    "median_kl": ("kl", "median"),
    "max_kl": ("kl", "max"),
    "median_rel_max_abs": ("rel_max_abs", "median"),
    "max_rel_max_abs": ("rel_max_abs", "max"),
}
SECTIONS = ("prompt", "decode")


def statistic(values, name: str) -> float:
    """One statistic of a section's per-position values (NaN or inf anywhere: inf, a failure)."""
    _, red = STATISTICS[name]
    v = np.asarray(values, np.float64)
    if v.size == 0:
        return 0.0
    if not np.isfinite(v).all():
        return float("inf")
    return float(np.median(v) if red == "median" else v.max())


def section_statistic(section: dict, name: str) -> float:
    """The statistic of a recorded section ({"one_minus_cos": [...], ...})."""
    metric, _ = STATISTICS[name]
    return statistic(section[metric], name)


# -- growth with depth: the free-running residual stream, layer by layer -------------------

#: per-layer statistics of the free-running comparison (over a section's positions)
DEPTH_KEYS = ("median_one_minus_cos", "max_one_minus_cos", "median_rel_max_abs", "max_rel_max_abs")


@contextmanager
def capture_layers() -> Iterator[list[list[np.ndarray]]]:
    """While the block lasts, every `BitNetModel.forward` call appends a list that receives each
    layer's output (the residual stream after the layer, [T, n_embd]) in layer order. Built on
    the methods the forward pass calls at call time, so planted faults and perturbations (which
    patch them too) are what is captured; wrap only the end-to-end run (teacher-forced layer
    views call forward as well)."""
    import bitnet.model.bitnet_model as bm

    cls = bm.BitNetModel
    real_forward, real_block = cls.forward, cls.block
    calls: list[list[np.ndarray]] = []

    def forward(self, tokens, cache, pos0, *, all_logits=True):
        calls.append([])
        return real_forward(self, tokens, cache, pos0, all_logits=all_logits)

    def block(self, i, layer, x, step):
        y = real_block(self, i, layer, x, step)
        if calls:
            calls[-1].append(np.array(y, np.float32))
        return y

    cls.forward, cls.block = forward, block
    try:
        yield calls
    finally:
        cls.forward, cls.block = real_forward, real_block


def engine_layers(calls: list[list[np.ndarray]], n_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """(prompt [L, T, D], decode steps [L, S, D]) from the calls of one `engine_outputs` run:
    its first forward is the prompt batch, the next n_steps the teacher-forced decode steps."""
    prompt = np.stack(calls[0])
    steps = [np.stack(c) for c in calls[1:1 + n_steps]]
    dec = np.concatenate(steps, axis=1) if steps else np.zeros((prompt.shape[0], 0, prompt.shape[2]), np.float32)
    return prompt, dec


def depth_profile(ours: np.ndarray, ref: np.ndarray) -> dict[str, list[float]]:
    """Per layer, over positions: median and max of 1-cos and of relative max|d| between two
    free-running residual streams [L, T, D] (each layer's input is that side's own previous
    output: the end-to-end run seen at every depth)."""
    out: dict[str, list[float]] = {k: [] for k in DEPTH_KEYS}
    if ours.shape != ref.shape:
        raise ConfigError(f"layer outputs differ in shape: ours {ours.shape}, reference {ref.shape}")
    if ours.shape[1] == 0:
        return out
    for a, b in zip(ours.astype(np.float64), ref.astype(np.float64), strict=True):
        na, nb = np.linalg.norm(a, axis=-1, keepdims=True), np.linalg.norm(b, axis=-1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            omc = np.square(a / np.maximum(na, 1e-300) - b / np.maximum(nb, 1e-300)).sum(-1) / 2.0
            rel = np.abs(a - b).max(-1) / np.maximum(np.abs(b).max(-1), 1e-300)
        for key, v in (("one_minus_cos", omc), ("rel_max_abs", rel)):
            fin = bool(np.isfinite(v).all())
            out[f"median_{key}"].append(float(np.median(v)) if fin else float("inf"))
            out[f"max_{key}"].append(float(v.max()) if fin else float("inf"))
    return out


def depth_profiles(layers: tuple, ref_l_out: np.ndarray, ref_decode_l_out: np.ndarray | None) -> dict:
    """{"prompt": depth_profile, "decode": ...} of our captured layers (crossval.deep.engine_layers)
    against the reference's `l_out` and `decode_l_out` (the decode section when both have steps)."""
    out = {"prompt": depth_profile(layers[0], np.asarray(ref_l_out))}
    if ref_decode_l_out is not None and layers[1].shape[1] and np.asarray(ref_decode_l_out).shape == layers[1].shape:
        out["decode"] = depth_profile(layers[1], np.asarray(ref_decode_l_out))
    return out


def depth_verdict(profile: dict[str, dict], depth: dict) -> tuple[str, dict, str]:
    """Judge per-section depth profiles ({"prompt": depth_profile, "decode": ...}) against the
    policy's per-layer envelope (`depth`: statistic, bounds [one per layer]; a model deeper
    than the calibration keeps the last bound). Returns (verdict, worst, reason)."""
    key, bounds = depth["statistic"], [float(b) for b in depth["bounds"]]
    worst = {"ratio": 0.0}
    for sec, prof in profile.items():
        for i, v in enumerate(prof.get(key, [])):
            b = bounds[min(i, len(bounds) - 1)]
            ratio = float("inf") if not np.isfinite(v) else v / b
            if ratio > worst["ratio"]:
                worst = {"ratio": ratio, "section": sec, "layer": i, "value": v, "bound": b}
    if "layer" not in worst:
        return "pass", worst, "no layers compared"
    first = next(((sec, i, v) for sec, prof in profile.items() for i, v in enumerate(prof.get(key, []))
                  if not (v <= bounds[min(i, len(bounds) - 1)])), None)
    if first:
        sec, i, v = first
        return "fail", worst, (f"free-running {key} over its depth envelope at {sec} layer {i}: {v:.3g} > "
                               f"{bounds[min(i, len(bounds) - 1)]:.2g}")
    return "pass", worst, (f"free-running {key} within its depth envelope at every layer (closest: {worst['section']} "
                           f"layer {worst['layer']}, {worst['value']:.3g} = {worst['ratio']:.2f} x its bound)")


@cache
def _policy() -> dict:
    from bitnet.receipts.policy import load_yaml, policy_dir

    return load_yaml(policy_dir() / "parity.yml").get("deep") or {}


def deep_bound(family: str | None) -> dict | None:
    """The calibrated bound for a format family (policies/parity.yml `deep.families`), or None."""
    fams = _policy().get("families") or {}
    b = fams.get(family) if family else None
    if b is None:
        return None
    if b.get("statistic") not in STATISTICS:
        raise ConfigError(f"policies/parity.yml deep.families.{family}.statistic {b.get('statistic')!r} is not one of "
                          f"{', '.join(STATISTICS)}")
    return dict(b)


@dataclass
class DeepVerdict:
    """The end-to-end comparison judged by the statistical bounds (reported beside the per-layer
    verdict): the logits statistic against its bound, and -- when both sides' free-running layer
    outputs were captured -- every layer's free-running divergence against the depth envelope.
    `verdict` is fail when either fails, skipped when the family has no calibration."""

    verdict: str
    statistic: str | None
    bound: float | None
    values: dict  # section -> the logits statistic's value
    reason: str
    calibration: str | None = None
    #: the depth envelope: "pass"/"fail", or "not measured" (no layer outputs on one side)
    depth_verdict: str | None = None
    #: the layer closest to (or furthest over) its envelope: section, layer, value, bound, ratio
    depth_worst: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def judge_result(res) -> DeepVerdict:
    """The statistical verdict of a ParityResult's end-to-end positions (prompt and decode) and,
    when `res.depth` holds the free-running depth profiles, of every layer."""
    b = deep_bound(res.family)
    if b is None:
        return DeepVerdict("skipped", None, None, {},
                           f"no end-to-end statistical bound is calibrated for family {res.family!r} "
                           "(policies/parity.yml deep.families)")
    name, bound = b["statistic"], float(b["bound"])
    metric, _ = STATISTICS[name]
    values = {}
    for sec, rows in (("prompt", res.positions), ("decode", res.decode_positions)):
        if rows:
            values[sec] = statistic([getattr(p, metric) for p in rows], name)
    over = [s for s, v in values.items() if not (v <= bound)]
    if res.nonfinite is not None:
        over = over or ["prompt"]
    shown = ", ".join(f"{s} {v:.3g}" for s, v in values.items())
    if over:
        why = f"logits {name} over the {'/'.join(over)} section{'s' if len(over) > 1 else ''}: {shown} > {bound:.2g}"
    else:
        why = f"logits {name} {shown} <= {bound:.2g}"
    verdict = "fail" if over else "pass"
    dv, worst = "not measured", None
    if b.get("depth") and getattr(res, "depth", None):
        dv, worst, dwhy = depth_verdict(res.depth, b["depth"])
        why += f"; {dwhy}"
        if dv == "fail":
            verdict = "fail"
    elif b.get("depth"):
        why += "; depth envelope not measured (no free-running layer outputs)"
    return DeepVerdict(verdict, name, bound, values, why, b.get("calibration"), dv, worst)


def attach(res) -> None:
    """Judge `res` (in place): `res.deep` and a clause in its reason. Reported, not deciding."""
    d = judge_result(res)
    res.deep = d.to_dict()
    res.reason += (f"; end-to-end statistical bound (reported): {d.verdict}: {d.reason}"
                   + (f" (calibrated at {d.calibration})" if d.calibration and d.verdict != "skipped" else ""))


# -- calibration: judging recorded measurements (crossval.deep_calibrate) --------------------

DEFAULT_STATISTIC = "median_one_minus_cos"
DEFAULT_MARGIN = 3.0
DEFAULT_DEPTH_STATISTIC = "median_one_minus_cos"
#: the depth envelope's margin over the largest correct value at each depth
DEFAULT_DEPTH_MARGIN = 10.0
#: no envelope bound below margin x this. Layer 0 of correct pairs sits at the float floor
#: (measured median 1-cos 4e-14: both sides start from the same embeddings, and an int8
#: rounding flip moves one position, not the median), the weakest planted fault at 2e-5: the
#: floor keeps the layer-0 bound (1e-9) four orders above the one and four below the other
DEPTH_FLOOR = 1e-10


def _run_value(rec: dict, name: str) -> float:
    """A record's statistic: the larger over its sections (a comparison fails on either)."""
    return max(section_statistic(rec[s], name) for s in SECTIONS if s in rec)


def _rows(doc: dict) -> tuple[list[dict], list[dict]]:
    correct, faults = [], []
    for p in doc["pairs"].values():
        fam = p.get("family", "int8-act")
        for r in p["records"]:
            correct.append({**r, "family": fam})
        for f in p.get("faults", []):
            faults.append({**f, "family": fam})
    return correct, faults


def depth_envelope(runs: list[dict], key: str, margin: float) -> list[float]:
    """Per layer: margin x the largest correct value at that depth or any shallower one
    (a running maximum: divergence grows with depth, and a layer with few flips in the
    calibration set must not get a tighter bound than the layers before it)."""
    runs = [r for r in runs if "depth" in r]
    n = max(len(r["depth"]["prompt"][key]) for r in runs)
    per_layer = [max((sec[key][i] for r in runs for sec in r["depth"].values() if i < len(sec[key])), default=0.0)
                 for i in range(n)]
    cum = np.maximum.accumulate(np.asarray(per_layer, np.float64))
    return [float(f"{margin * max(float(c), DEPTH_FLOOR):.2g}") for c in cum]


def _seed_of(rec: dict) -> str:
    return rec["pair"].rsplit("-", 1)[-1]


def judge(doc: dict, margin: float | None = None, stat: str | None = None, depth_margin: float | None = None,
          depth_stat: str | None = None) -> dict:
    """Two bounds from the correct runs: the logits statistic's (margin x the largest correct
    value) and the depth envelope (per layer, crossval.deep.depth_envelope). Every correct run
    must pass both; every planted fault that changes the model is judged by both. Tabulates
    every candidate statistic's separation (the weakest fault over the largest correct value)
    so the choice is visible, and a leave-one-seed-out hold-out of the envelope."""
    margin = float(margin or doc.get("margin") or DEFAULT_MARGIN)
    stat = stat or doc.get("statistic") or DEFAULT_STATISTIC
    depth_margin = float(depth_margin or doc.get("depth_margin") or DEFAULT_DEPTH_MARGIN)
    depth_stat = depth_stat or doc.get("depth_statistic") or DEFAULT_DEPTH_STATISTIC
    if stat not in STATISTICS or depth_stat not in DEPTH_KEYS:
        raise ValueError(f"unknown statistic {stat!r} / {depth_stat!r}; known: {', '.join(STATISTICS)} / "
                         f"{', '.join(DEPTH_KEYS)}")
    correct, faults = _rows(doc)
    if not correct:
        raise ValueError("no correct runs recorded")
    live = [f for f in faults if f.get("changes_model") and "prompt" in f]
    candidates = {}
    for name in STATISTICS:
        cmax = max(_run_value(r, name) for r in correct)
        fvals = {f"{f['name']} [{f['pair']}]": _run_value(f, name) for f in live}
        weakest = min(fvals, key=fvals.get) if fvals else None
        candidates[name] = {"largest_correct": cmax,
                            "weakest_fault": weakest, "weakest_fault_value": fvals.get(weakest) if weakest else None,
                            "faults_over_margin_x_correct": sum(v > margin * cmax for v in fvals.values()),
                            "faults": len(fvals)}
    cmax = candidates[stat]["largest_correct"]
    bound = float(f"{margin * cmax:.2g}")
    deep_runs = [r for r in correct if "depth" in r]
    depth = None
    depth_candidates = {}
    if deep_runs:
        for key in DEPTH_KEYS:
            env = depth_envelope(deep_runs, key, depth_margin)
            caught = sum(depth_verdict(f["depth"], {"statistic": key, "bounds": env})[0] == "fail"
                         for f in live if "depth" in f)
            loso = 0
            for seed in sorted({_seed_of(r) for r in deep_runs}):
                train = [r for r in deep_runs if _seed_of(r) != seed]
                if not train:
                    continue
                e2 = depth_envelope(train, key, depth_margin)
                loso += sum(depth_verdict(r["depth"], {"statistic": key, "bounds": e2})[0] == "fail"
                            for r in deep_runs if _seed_of(r) == seed)
            depth_candidates[key] = {"faults_caught": caught, "faults": sum("depth" in f for f in live),
                                     "holdout_false_alarms": loso, "envelope_first_last": [env[0], env[-1]]}
        depth = {"statistic": depth_stat, "margin": depth_margin,
                 "bounds": depth_envelope(deep_runs, depth_stat, depth_margin)}
    by_kind: dict[str, dict] = {}
    for r in correct:
        k = r["kind"] if r["kind"] == "reference" else f"perturbation {r['name']}"
        k = f"{k} [{r['numerics']}]"
        v = _run_value(r, stat)
        e = by_kind.setdefault(k, {"runs": 0, "max": 0.0, "values": [], "depth_runs": 0, "depth_closest": 0.0})
        e["runs"] += 1
        e["max"] = max(e["max"], v)
        e["values"].append(v)
        if depth and "depth" in r:
            e["depth_runs"] += 1
            e["depth_closest"] = max(e["depth_closest"], depth_verdict(r["depth"], depth)[1]["ratio"])
    for e in by_kind.values():
        e["p50"] = float(np.median(e.pop("values")))
    false_alarms = [{k: r[k] for k in ("pair", "kind", "name", "prompt_index")} for r in correct
                    if not (_run_value(r, stat) <= bound)
                    or (depth and "depth" in r and depth_verdict(r["depth"], depth)[0] == "fail")]
    table = []
    for f in faults:
        row = {"fault": f["name"], "size": f.get("size"), "pair": f["pair"], "numerics": f["numerics"]}
        if f.get("error"):
            row.update(verdict="error", note=f"cannot be planted: {f['error']}")
        elif not f.get("changes_model"):
            row.update(verdict="n/a", note="does not change this model")
        else:
            vals = {s: section_statistic(f[s], stat) for s in SECTIONS if s in f}
            v = max(vals.values())
            logits = "fail" if not (v <= bound) else "pass"
            row.update(values=vals, value=v, ratio_to_bound=v / bound if bound else float("inf"), logits=logits)
            dv = "not measured"
            if depth and "depth" in f:
                dv, worst, dwhy = depth_verdict(f["depth"], depth)
                row.update(depth_worst=worst, depth_reason=dwhy)
            row["depth"] = dv
            row["verdict"] = "fail" if "fail" in (logits, dv) else "pass"
        table.append(row)
    missed = [f"{r['fault']} [{r['pair']}]" for r in table if r["verdict"] == "pass"]
    fault_min = min((r["value"] for r in table if r.get("logits") == "fail"), default=None)
    return {**doc, "statistic": stat, "margin": margin, "bound": bound, "depth_statistic": depth_stat,
            "depth_margin": depth_margin, "depth_envelope": depth, "depth_candidates": depth_candidates,
            "candidates": candidates, "correct": by_kind, "correct_runs": len(correct),
            "false_alarms": false_alarms, "fault_table": table, "missed_faults": missed,
            "separation": {"largest_correct": cmax, "bound": bound,
                           "weakest_caught_fault": fault_min,
                           "weakest_caught_over_bound": (fault_min / bound) if fault_min and bound else None},
            "verdict": {"ok": not false_alarms, "false_alarms": len(false_alarms), "missed_faults": len(missed)}}


def report_markdown(doc: dict) -> str:
    stat = doc["statistic"]
    out = [f"Logits statistic: `{stat}` per section (prompt positions, decode steps), the larger of the two; bound "
           f"{doc['bound']:.2g} = {doc['margin']:g} x the largest correct value {doc['separation']['largest_correct']:.3g}. "
           f"{doc['correct_runs']} correct runs, {len(doc['false_alarms'])} over a bound."]
    env = doc.get("depth_envelope")
    if env:
        b = env["bounds"]
        out.append(f"Depth envelope: free-running `{env['statistic']}` per layer and section, bound = {env['margin']:g} x "
                   f"the largest correct value at that depth or shallower (layers 0 / 5 / 10 / 20 / last: "
                   + " / ".join(f"{b[i]:.2g}" for i in (0, 5, 10, 20, len(b) - 1) if i < len(b)) + ").")
    out += ["", "| correct pair | runs | logits statistic median | max | depth runs | closest to the envelope |",
            "| --- | --- | --- | --- | --- | --- |"]
    for k, e in doc["correct"].items():
        out.append(f"| {k} | {e['runs']} | {e['p50']:.3g} | {e['max']:.3g} | {e.get('depth_runs', 0)} | "
                   f"{e.get('depth_closest', 0.0):.2g} x |")
    out += ["", "| candidate logits statistic | largest correct | weakest changing fault | its value | faults over "
                f"{doc['margin']:g} x correct |", "| --- | --- | --- | --- | --- |"]
    for name, c in doc["candidates"].items():
        wv = c["weakest_fault_value"]
        out.append(f"| `{name}` | {c['largest_correct']:.3g} | {c['weakest_fault'] or '-'} | "
                   f"{'-' if wv is None else f'{wv:.3g}'} | {c['faults_over_margin_x_correct']} of {c['faults']} |")
    if doc.get("depth_candidates"):
        out += ["", f"| candidate depth statistic ({doc['depth_margin']:g} x) | faults caught | leave-one-seed-out false "
                    "alarms | envelope at layer 0 / last |", "| --- | --- | --- | --- |"]
        for key, c in doc["depth_candidates"].items():
            out.append(f"| `{key}` | {c['faults_caught']} of {c['faults']} | {c['holdout_false_alarms']} | "
                       f"{c['envelope_first_last'][0]:.2g} / {c['envelope_first_last'][1]:.2g} |")
    out += ["", "| fault | pair | size | logits statistic (prompt / decode) | logits | depth: first layer over "
                "(ratio to its bound) | verdict |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in doc["fault_table"]:
        if "values" in r:
            v = " / ".join(f"{r['values'].get(s, float('nan')):.3g}" for s in SECTIONS)
            w = r.get("depth_worst") or {}
            d = (f"{r['depth']}: {w.get('section')} layer {w.get('layer')} ({w.get('ratio', 0):.3g} x)"
                 if w.get("layer") is not None else r["depth"])
            out.append(f"| {r['fault']} | {r['pair']} | {r['size']} | {v} | {r['logits']} | {d} | **{r['verdict']}** |")
        else:
            out.append(f"| {r['fault']} | {r['pair']} | {r['size']} | {r.get('note', '')} | - | - | **{r['verdict']}** |")
    return "\n".join(out) + "\n"


def update_policy(doc: dict, data_file: str) -> Path:
    """Write the judged bounds into policies/parity.yml `deep` (comments kept, atomically)."""
    import io

    from ruamel.yaml import YAML

    from bitnet.receipts.policy import policy_dir

    path = policy_dir() / "parity.yml"
    y = YAML()
    pol = y.load(path.read_text())
    fams = {}
    for fam in sorted({p.get("family", "int8-act") for p in doc["pairs"].values()}):
        fams[fam] = {"statistic": doc["statistic"], "bound": doc["bound"], "margin": doc["margin"],
                     "largest_correct": float(f"{doc['separation']['largest_correct']:.3g}"),
                     "calibration": f"docs/data/{data_file}"}
        env = doc.get("depth_envelope")
        if env:
            fams[fam]["depth"] = {"statistic": env["statistic"], "margin": env["margin"], "bounds": list(env["bounds"])}
    pol["deep"] = {"families": fams}
    buf = io.StringIO()
    y.dump(pol, buf)
    text = buf.getvalue()
    if POLICY_NOTE.splitlines()[0] not in text:  # once, not once per update
        text = text.replace("\ndeep:\n", "\n" + POLICY_NOTE + "deep:\n", 1)
    _policy.cache_clear()
    return atomic_write_text(path, text)


POLICY_NOTE = """\
# End-to-end statistical bounds for deep models (crossval/deep.py), reported beside the per-layer
# `exact` verdict with end_to_end="report" (`bitnet crossval --deep`); never deciding it. Per format
# family: the logits statistic (per section: prompt positions, decode steps) against `bound`
# (margin x the largest correct value), and the free-running depth envelope: per layer,
# `depth.bounds[N]` = depth.margin x the largest correct value at depth N or shallower.
# Set by `python -m crossval.deep_calibrate --report ... --update-policy` at the 2B-4T shape.
"""
