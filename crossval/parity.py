"""Parity metrics, gates and verdicts.

Per position: cosine similarity, max-abs difference, KL(ref || ours) of the softmaxes, top-1
agreement and top-5 overlap; over the sequence: the first diverging position (first position
failing a per-position gate). Greedy generation: exact-match rate and first divergence.
Verdicts: `pass`, `fail`, `skipped` (with a reason), `error` (with what broke). A skip is never a
pass: `ParityResult.passed` is True only for `pass`.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import numpy as np

from bitnet.errors import ConfigError
from bitnet.files.atomic import atomic_write_text

VERDICTS = ("pass", "fail", "skipped", "error")
#: format families whose noise floors differ (policies/parity.yml `families`)
#: float: F32 activations into every matmul; f16-act: activations rounded to F16 (F16/BF16
#: weights under llama.cpp); int8-act: activations quantized to int8 (TQ, I2_S, `reference`).
#: A rounding step turns a one-ulp float difference into an occasional whole-step flip.
FAMILIES = ("float", "f16-act", "int8-act")
#: the per-position bounds a family may set (each a maximum)
BOUND_KEYS = ("max_one_minus_cos", "max_kl", "max_rel_abs")
#: bounds on the median over a section's positions: rounding flips hit a few positions, a
#: systematic fault (an eps, a dtype, a scale) moves all of them
MEDIAN_KEYS = ("max_median_one_minus_cos", "max_median_rel_abs")


@cache
def _profiles() -> dict:
    from bitnet.receipts.policy import load_yaml, policy_dir

    return load_yaml(policy_dir() / "parity.yml")["profiles"]


def thresholds(profile: str, family: str | None = None) -> dict:
    """The gate's bounds: the profile's top-level keys, overridden by `families[family]` when
    given (a family the profile does not list keeps the top-level bounds). The top-level
    per-position bounds are the loosest family's, so a caller that cannot name the family
    is never gated tighter than the calibration allows."""
    profiles = _profiles()
    if profile not in profiles:
        raise ConfigError(f"unknown parity profile {profile!r}; known: {', '.join(profiles)}")
    base = {k: v for k, v in profiles[profile].items() if k != "families"}
    fams = profiles[profile].get("families") or {}
    if family is not None:
        if family not in FAMILIES:
            raise ConfigError(f"unknown format family {family!r}; known: {', '.join(FAMILIES)}")
        base.update(fams.get(family) or {})
    base.setdefault("max_one_minus_cos", 1.0 - float(base.get("min_cosine", 0.0)))
    base["min_cosine"] = 1.0 - float(base["max_one_minus_cos"])
    return base


@dataclass
class PositionMetrics:
    position: int
    cosine: float
    max_abs: float
    kl: float
    top1_ours: int
    top1_ref: int
    top5_overlap: float
    #: 1 - cosine computed without cancellation, and max|d| / max|ref| (new in receipt 1.1)
    one_minus_cos: float = 0.0
    rel_max_abs: float = 0.0


@dataclass
class NonFinite:
    """The first non-finite logit of one side: where and what."""

    side: str  # "ours" or "reference"
    section: str  # "prompt" or "decode"
    position: int
    index: int  # vocabulary index
    kind: str  # "nan", "+inf", "-inf"

    def describe(self) -> str:
        where = "position" if self.section == "prompt" else "decode step"
        return f"non-finite logits: {self.side} {where} {self.position} token {self.index} is {self.kind}"


@dataclass
class ParityResult:
    verdict: str
    reason: str
    profile: str
    positions: list[PositionMetrics] = field(default_factory=list)
    first_divergence: int | None = None
    greedy_ours: list[int] = field(default_factory=list)
    greedy_ref: list[int] = field(default_factory=list)
    greedy_match: float | None = None
    greedy_first_divergence: int | None = None
    #: both sides' top-k tokens at the positions a reader looks at first (`topk_tables`); kept
    #: for the HTML report (crossval.report), not written to the receipt
    topk: list[dict] = field(default_factory=list)
    # -- receipt 1.1: decode steps, family bounds, non-finite, degenerate greedy ----------
    family: str | None = None
    bounds: dict = field(default_factory=dict)
    decode_tokens: list[int] = field(default_factory=list)
    decode_positions: list[PositionMetrics] = field(default_factory=list)
    decode_first_divergence: int | None = None
    nonfinite: NonFinite | None = None
    greedy_degenerate: bool = False
    #: per-layer teacher-forced metrics (crossval.layers.LayerMetrics as dicts), when measured
    layers: list[dict] = field(default_factory=list)
    layer_first_divergence: int | None = None
    #: the same over the teacher-forced decode steps (each layer's KV cache built from the
    #: reference's prompt inputs, one token per step), when the reference captured them
    decode_layers: list[dict] = field(default_factory=list)
    decode_layer_first_divergence: int | None = None
    #: receipt 2.2: the op-by-op trace (crossval.trace.trace_to_dict), when asked for
    trace: dict | None = None
    #: receipt 2.3: with end_to_end="report" (deep models), the end-to-end comparison judged by
    #: the calibrated statistical bound (crossval.deep.DeepVerdict as a dict), reported
    deep: dict | None = None
    #: our free-running layer outputs against the reference's, per section and layer
    #: (crossval.deep.depth_profiles), when both were captured; judged by `deep`
    depth: dict | None = None

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    def worst(self, metric: str, section: str = "all") -> float:
        """The largest value of a metric (`one_minus_cos`, `kl`, `rel_max_abs`) over a section."""
        rows = (self.positions if section in ("all", "prompt") else []) + \
            (self.decode_positions if section in ("all", "decode") else [])
        return max((float(getattr(p, metric)) for p in rows), default=0.0)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def first_nonfinite(x: np.ndarray, side: str, section: str = "prompt") -> NonFinite | None:
    """The first (position, vocabulary index) holding NaN or an infinity, row-major."""
    bad = ~np.isfinite(x)
    if not bad.any():
        return None
    flat = int(np.flatnonzero(bad.reshape(-1))[0])
    pos, idx = divmod(flat, x.shape[-1])
    v = float(x.reshape(-1)[flat])
    kind = "nan" if np.isnan(v) else ("+inf" if v > 0 else "-inf")
    return NonFinite(side, section, pos, idx, kind)


def position_metrics(ours: np.ndarray, ref: np.ndarray) -> list[PositionMetrics]:
    if ours.shape != ref.shape:
        raise ConfigError(f"logits shapes differ: ours {ours.shape}, reference {ref.shape}")
    a, b = ours.astype(np.float64), ref.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        na, nb = np.linalg.norm(a, axis=-1), np.linalg.norm(b, axis=-1)
        cos = (a * b).sum(-1) / np.maximum(na * nb, 1e-300)
        # 1 - cos = |a/|a| - b/|b||^2 / 2: no cancellation near 1 (the noise floor sits at 1e-12)
        omc = np.square(a / np.maximum(na, 1e-300)[:, None] - b / np.maximum(nb, 1e-300)[:, None]).sum(-1) / 2.0
        lp_a, lp_b = _log_softmax(a), _log_softmax(b)
        kl = (np.exp(lp_b) * (lp_b - lp_a)).sum(-1)
        diff = np.abs(a - b).max(-1)
        rel = diff / np.maximum(np.abs(b).max(-1), 1e-300)
    top5_a = np.argsort(-a, axis=-1)[:, :5]
    top5_b = np.argsort(-b, axis=-1)[:, :5]
    out = []
    for i in range(a.shape[0]):
        k = float(kl[i])
        out.append(PositionMetrics(i, float(cos[i]), float(diff[i]), k if np.isnan(k) else max(k, 0.0),
                                   int(np.nanargmax(a[i])) if np.isfinite(a[i]).any() else 0,
                                   int(np.nanargmax(b[i])) if np.isfinite(b[i]).any() else 0,
                                   len(set(top5_a[i]) & set(top5_b[i])) / 5.0,
                                   float(omc[i]), float(rel[i])))
    return out


#: tokens per top-k table, and tables per section (the first divergence, then the worst by 1-cos)
TOPK_K = 5
TOPK_POSITIONS = 3


def _topk_positions(rows: list[PositionMetrics], first: int | None, n: int) -> list[tuple[int, str]]:
    """(position, why) for up to n positions: the first diverging one, then the worst by 1-cos
    (ties by KL); a NaN metric ranks worst."""
    def badness(p: PositionMetrics) -> tuple[float, float]:
        def f(v: float) -> float:
            return float("inf") if np.isnan(v) else v

        return f(p.one_minus_cos), f(p.kl)

    ranked = [p.position for p in sorted(rows, key=badness, reverse=True)]
    chosen = ([first] if first is not None else []) + [q for q in ranked if q != first]
    out = []
    for q in chosen[:n]:
        why = f"rank {ranked.index(q) + 1} by 1-cos"
        out.append((q, f"first divergence, {why}" if q == first else why))
    return out


def _top(x: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values, largest first (a partition, not a sort of the vocabulary:
    compare() runs in calibration loops over 128k-token vocabularies)."""
    k = min(k, x.size)
    idx = np.argpartition(-x, k - 1)[:k]
    return idx[np.argsort(-x[idx], kind="stable")]


def topk_tables(ours: np.ndarray, ref: np.ndarray, rows: list[PositionMetrics], section: str,
                first: int | None = None, k: int = TOPK_K, n: int = TOPK_POSITIONS) -> list[dict]:
    """Both sides' top-k tokens at up to n positions of a section (the first divergence, then
    the worst by 1-cos): for each of the reference's top tokens our logit, probability and rank
    for it, and our own top-k beside them. A reader sees whether a divergence reorders the
    candidates or only moves their weights."""
    tables = []
    for pos, why in _topk_positions(rows, first, n):
        a, b = np.asarray(ours[pos], np.float64), np.asarray(ref[pos], np.float64)
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            pa, pb = np.exp(_log_softmax(a[None]))[0], np.exp(_log_softmax(b[None]))[0]
        key_a, key_b = np.nan_to_num(a, nan=-np.inf), np.nan_to_num(b, nan=-np.inf)
        top_a, top_b = _top(key_a, k), _top(key_b, k)

        def rank(x: np.ndarray, t: int) -> int:
            return int((x > x[t]).sum()) + 1

        tables.append({
            "section": section, "position": int(pos), "why": why,
            "reference": [{"id": int(t), "logit": float(b[t]), "prob": float(pb[t]), "engine_logit": float(a[t]),
                           "engine_prob": float(pa[t]), "engine_rank": rank(key_a, int(t))} for t in top_b],
            "engine": [{"id": int(t), "logit": float(a[t]), "prob": float(pa[t]), "reference_logit": float(b[t]),
                        "reference_rank": rank(key_b, int(t))} for t in top_a],
        })
    return tables


def _diverging(pos: list[PositionMetrics], th: dict, top1_is_per_position: bool) -> list[int]:
    """Positions failing a per-position bound. NaN metrics fail (a comparison with NaN is
    False, so every bound is written as `not (value <= bound)`)."""
    bad = []
    for p in pos:
        if not (p.one_minus_cos <= th["max_one_minus_cos"]) or not (p.kl <= th["max_kl"]) \
                or ("max_rel_abs" in th and not (p.rel_max_abs <= th["max_rel_abs"])) \
                or (top1_is_per_position and p.top1_ours != p.top1_ref):
            bad.append(p.position)
    return bad


def _describe(p: PositionMetrics, where: str) -> str:
    return (f"{where} {p.position} diverges: 1-cos {p.one_minus_cos:.3g}, KL {p.kl:.3g}, "
            f"rel max|d| {p.rel_max_abs:.3g}, top-1 {p.top1_ours} vs {p.top1_ref}")


def section_medians(rows: list[PositionMetrics]) -> dict[str, float]:
    """Median over positions of 1-cos and of rel max|d| (NaN for an empty section)."""
    if not rows:
        return {"median_one_minus_cos": float("nan"), "median_rel_abs": float("nan")}
    return {"median_one_minus_cos": float(np.median([p.one_minus_cos for p in rows])),
            "median_rel_abs": float(np.median([p.rel_max_abs for p in rows]))}


def _median_reasons(rows: list[PositionMetrics], th: dict, section: str) -> list[str]:
    if not rows:
        return []
    med = section_medians(rows)
    out = []
    for key, m in (("max_median_one_minus_cos", "median_one_minus_cos"), ("max_median_rel_abs", "median_rel_abs")):
        if key in th and not (med[m] <= th[key]):
            out.append(f"{section} {m.replace('_', ' ').replace('rel abs', 'rel max|d|')} {med[m]:.3g} > {th[key]:.3g} "
                       f"over {len(rows)} positions (a systematic difference, not a rounding flip)")
    return out


def degenerate(tokens) -> bool:
    """A greedy continuation of two or more tokens that repeats one token: matching it tests
    almost nothing (tiny random models do this)."""
    t = [int(x) for x in tokens]
    return len(t) >= 2 and len(set(t)) == 1


def compare(ours: np.ndarray, ref: np.ndarray, profile: str = "exact", *, greedy_ours=(), greedy_ref=(),
            family: str | None = None, decode_ours: np.ndarray | None = None,
            decode_ref: np.ndarray | None = None, decode_tokens=(), bounds: dict | None = None,
            flips_decide: bool = True) -> ParityResult:
    """Gate our logits [T, V] against the reference's, prompt positions and (when given)
    teacher-forced decode steps [S, V] separately, under `profile`'s bounds for `family`.

    Non-finite logits on either side fail, naming the first. With `min_top1_agreement` below
    1 a top-1 flip counts toward that fraction instead of failing its position. `bounds`
    overrides policy keys (calibration judges planted faults under the bounds it proposes).

    `flips_decide=False` (see `flips_decide`) reports top-1 flips and greedy mismatches without
    letting them fail: the per-layer gate decides instead, the continuous bounds still gate."""
    th = thresholds(profile, family)
    if bounds:
        th.update(bounds)
        th["min_cosine"] = 1.0 - float(th["max_one_minus_cos"])
    res = ParityResult("pass", "", profile, family=family,
                       bounds={k: th[k] for k in (*BOUND_KEYS, *MEDIAN_KEYS, "min_top1_agreement", "min_top5_overlap",
                                                  "min_greedy_match") if k in th})
    reasons: list[str] = []
    sections = [("prompt", ours, ref)]
    if decode_ours is not None or decode_ref is not None:
        if decode_ours is None or decode_ref is None:
            raise ConfigError("decode logits given for one side only")
        sections.append(("decode", np.asarray(decode_ours), np.asarray(decode_ref)))
        res.decode_tokens = [int(t) for t in decode_tokens]
    for section, o, r in sections:
        nf = first_nonfinite(np.asarray(o), "ours", section) or first_nonfinite(np.asarray(r), "reference", section)
        if nf is not None and res.nonfinite is None:
            res.nonfinite = nf
            reasons.append(nf.describe())
    per_pos_top1 = th["min_top1_agreement"] >= 1.0 and flips_decide
    notes = []
    res.positions = position_metrics(ours, ref)
    all_rows = list(res.positions)
    bad = _diverging(res.positions, th, per_pos_top1)
    if bad:
        res.first_divergence = bad[0]
        reasons.append(_describe(res.positions[bad[0]], "position"))
    reasons += _median_reasons(res.positions, th, "prompt")
    res.topk = topk_tables(ours, ref, res.positions, "prompt", res.first_divergence)
    if len(sections) > 1:
        res.decode_positions = position_metrics(sections[1][1], sections[1][2])
        all_rows += res.decode_positions
        dbad = _diverging(res.decode_positions, th, per_pos_top1)
        if dbad:
            res.decode_first_divergence = dbad[0]
            reasons.append(_describe(res.decode_positions[dbad[0]], "decode step"))
        reasons += _median_reasons(res.decode_positions, th, "decode")
        res.topk += topk_tables(sections[1][1], sections[1][2], res.decode_positions, "decode",
                                res.decode_first_divergence)
    top1 = float(np.mean([p.top1_ours == p.top1_ref for p in all_rows])) if all_rows else 1.0
    top5 = float(np.mean([p.top5_overlap for p in all_rows])) if all_rows else 1.0
    flip_sink = reasons if flips_decide else notes
    if top1 < th["min_top1_agreement"]:
        flips = [p for p in all_rows if p.top1_ours != p.top1_ref]
        where = f"; first flip at {'position' if any(flips[0] is x for x in res.positions) else 'decode step'} " \
                f"{flips[0].position}" if flips else ""
        flip_sink.append(f"top-1 agreement {top1:.3f} < {th['min_top1_agreement']}{where}"
                         + ("" if flips_decide else " (reported: the per-layer gate decides)"))
    if top5 < th["min_top5_overlap"]:
        flip_sink.append(f"top-5 overlap {top5:.3f} < {th['min_top5_overlap']}")
    if len(greedy_ref):
        go, gr = list(map(int, greedy_ours)), list(map(int, greedy_ref))
        n = min(len(go), len(gr))
        matches = [go[i] == gr[i] for i in range(n)]
        res.greedy_ours, res.greedy_ref = go, gr
        res.greedy_match = float(np.mean(matches)) if n else 0.0
        res.greedy_first_divergence = next((i for i, m in enumerate(matches) if not m), None)
        res.greedy_degenerate = degenerate(gr)
        if res.greedy_degenerate:
            notes.append(f"greedy continuation is degenerate (token {gr[0]} repeated {len(gr)} times): its match "
                         "tests little" + ("; the teacher-forced decode steps decide" if len(sections) > 1 else
                                           " and no decode steps were compared"))
        if res.greedy_match < th["min_greedy_match"]:
            flip_sink.append(f"greedy exact-match {res.greedy_match:.3f} < {th['min_greedy_match']} "
                           f"(first divergence at generated token {res.greedy_first_divergence})")
    if reasons:
        res.verdict, res.reason = "fail", "; ".join(reasons + notes)
    else:
        parts = [f"{len(res.positions)} positions"]
        if res.decode_positions:
            parts.append(f"{len(res.decode_positions)} decode steps")
        parts.append(f"max 1-cos {res.worst('one_minus_cos'):.3g}, max KL {res.worst('kl'):.3g}, "
                     f"max rel max|d| {res.worst('rel_max_abs'):.3g}" if all_rows else "no positions")
        res.reason = ", ".join(parts) + ("; " + "; ".join(notes) if notes else "")
    return res


def flips_decide(profile: str, family: str | None, layers_gated: bool) -> bool:
    """Whether top-1 flips and greedy mismatches fail the end-to-end comparison. Not where the
    family's policy says `top1_decides_with_layers: false` and the per-layer gate is applied:
    in int8-act models one activation landing within an ulp of a rounding tie (measured:
    13.5000019, 2 ulps) flips one int8 step in one layer at one position; through attention
    that moves every later position (~1e-5 1-cos) and tips near-tied top-1 pairs. The per-layer
    gate sees the flip as what it is (one position of one layer), the continuous end-to-end
    bounds still apply, and the flips are reported."""
    if not layers_gated:
        return True
    return bool(thresholds(profile, family).get("top1_decides_with_layers", True))


def gate_layers(res: ParityResult, layers: list, *, end_to_end: str = "gate",
                decode_layers: list | None = None) -> ParityResult:
    """Fold per-layer teacher-forced metrics into a result: a layer over the family's
    `layer_max_rel_abs` / `layer_max_one_minus_cos` / `layer_max_median_rel_abs` bound (or
    non-finite) fails; `decode_layers` (the teacher-forced decode steps, per layer) are gated at
    the single-position bounds (their median is reported: one K/V rounding flip at a prompt
    position moves every step) and reported apart. With end_to_end="report" the end-to-end verdict is kept
    in the reason but does not decide (deep random models: rounding flips grow chaotically
    through the layers)."""
    th = thresholds(res.profile, res.family)
    if "layer_max_rel_abs" not in th:
        raise ConfigError(f"policies/parity.yml has no per-layer bounds for profile {res.profile!r} family "
                          f"{res.family!r}; run `python -m crossval.calibrate --update-policy`")
    res.layers = [asdict(x) for x in layers]
    keys = [("max_rel_abs", "layer_max_rel_abs"), ("max_one_minus_cos", "layer_max_one_minus_cos"),
            ("median_rel_abs", "layer_max_median_rel_abs")]
    # sub-layer forcing (every sub-block on the reference's own inputs, crossval.layers.
    # sublayer_forced_layers; each LayerMetrics names its op) has its own, tighter bounds: no
    # rounding flip crosses a sub-block boundary, so the floor is the float floor
    sub = bool(layers) and all(getattr(x, "op", None) is not None for x in layers) and "sublayer_max_rel_abs" in th
    pkeys = [(m, "sub" + b) for m, b in keys] if sub else keys

    def over(rows: list, keys=keys) -> list:
        return [x for x in rows if any(b in th and not (getattr(x, m) <= th[b]) for m, b in keys)]

    def say(x, where: str, keys=keys) -> str:
        k = dict(keys)
        return (f"{where} {x.layer} diverges (teacher-forced on the reference's input"
                f"{', sub-block ' + x.op if getattr(x, 'op', None) and keys is pkeys and sub else ''}): median over "
                f"{'steps' if where.startswith('decode') else 'positions'} of rel max|d| {x.median_rel_abs:.3g} "
                f"(bound {th.get(k['median_rel_abs'], float('nan')):.2g}), max {x.max_rel_abs:.3g} (bound "
                f"{th[k['max_rel_abs']]:.2g}) at {'step' if where.startswith('decode') else 'position'} "
                f"{x.worst_position}, 1-cos {x.max_one_minus_cos:.3g}")

    bad = over(layers, pkeys)
    parts = []
    if bad:
        res.layer_first_divergence = bad[0].layer
        parts.append(say(bad[0], "layer", pkeys))
    else:
        parts.append(f"{len(layers)} layers within {'sub-layer ' if sub else ''}bounds (max rel max|d| "
                     f"{max((x.max_rel_abs for x in layers), default=0.0):.3g})")
    dbad = []
    if decode_layers:
        res.decode_layers = [asdict(x) for x in decode_layers]
        # decode steps: the single-position bounds gate, the median is reported. Measured at the
        # 2B-4T shape: one int8 flip in a layer's K/V at one prompt position moves every decode
        # step of that layer (layer 17: lower median 1.5e-3 over 8 steps, every other layer
        # 1e-7), since all steps attend to it; a KV-path bug moves them far more (0.3 max)
        dbad = over(decode_layers, keys[:2])
        if dbad:
            res.decode_layer_first_divergence = dbad[0].layer
            parts.append(say(dbad[0], "decode-step layer"))
        else:
            parts.append(f"decode steps: {len(decode_layers)} layers within bounds (max rel max|d| "
                         f"{max(x.max_rel_abs for x in decode_layers):.3g})")
    layer_reason = "; ".join(parts)
    failed = bool(bad or dbad)
    if end_to_end == "report":
        e2e = f"end to end (reported, not gating): {res.verdict}: {res.reason}"
        res.verdict = "fail" if (failed or res.nonfinite is not None) else "pass"
        res.reason = f"{layer_reason}; {e2e}"
        from crossval.deep import attach

        attach(res)  # the deep-model statistical bound, reported beside the per-layer verdict
    else:
        if failed:
            res.verdict = "fail"
        res.reason = f"{layer_reason}; {res.reason}"
    return res


def skipped(reason: str, profile: str = "exact") -> ParityResult:
    return ParityResult("skipped", reason, profile)


def errored(reason: str, profile: str = "exact") -> ParityResult:
    return ParityResult("error", reason, profile)


PARITY_SCHEMA_VERSION = "2.3.0"  # 2.x: both sides are named engines (1.x assumed ours vs libllama); 2.1: gate, prompt, decode, layers; 2.2: trace; 2.3: deep


def parity_receipt(result: ParityResult, *, model: str | os.PathLike[str], prompt_ids: list[int],
                   engine: dict, reference: dict, timings: dict, corrections: list[dict] | None = None) -> dict:
    """`engine` / `reference`: each side's `EngineInfo.to_dict()` (spec, name, version, build,
    numerics). In `positions` and `greedy`, "ours" is the engine under test. `corrections`
    (validation corrections an engine of ours applied at load, `--apply-corrections`) is
    written only when some were applied."""
    from bitnet import __version__
    from bitnet.receipts.build import sha256_file

    return {
        "schema_version": PARITY_SCHEMA_VERSION,
        "tool": {"name": "bitnet-harness", "version": __version__},
        "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "model": {"path": str(model), "sha256": sha256_file(model), "bytes": Path(model).stat().st_size},
        "engine": engine,
        "reference": reference,
        "profile": result.profile,
        "prompt_ids": [int(i) for i in prompt_ids],
        "positions": [asdict(p) for p in result.positions],
        "first_divergence": result.first_divergence,
        "greedy": {"engine": result.greedy_ours, "reference": result.greedy_ref, "match": result.greedy_match,
                   "first_divergence": result.greedy_first_divergence},
        "verdict": result.verdict,
        "reason": result.reason,
        "timings": timings,
        # 1.1: the gate's family and bounds, prompt and decode sections gated separately
        "gate": {"family": result.family, "bounds": result.bounds,
                 "nonfinite": asdict(result.nonfinite) if result.nonfinite else None},
        "prompt": {"positions": len(result.positions), "first_divergence": result.first_divergence,
                   **_worsts(result, "prompt")},
        "layers": {"positions": result.layers, "first_divergence": result.layer_first_divergence,
                   **({"decode": result.decode_layers, "decode_first_divergence": result.decode_layer_first_divergence}
                      if result.decode_layers else {})},
        "decode": {"tokens": result.decode_tokens, "positions": [asdict(p) for p in result.decode_positions],
                   "first_divergence": result.decode_first_divergence,
                   "greedy_degenerate": result.greedy_degenerate, **_worsts(result, "decode")},
        **({"corrections": list(corrections)} if corrections else {}),
        **({"trace": result.trace} if result.trace is not None else {}),
        **({"deep": result.deep} if result.deep is not None else {}),
    }


def _worsts(result: ParityResult, section: str) -> dict:
    rows = result.positions if section == "prompt" else result.decode_positions
    med = {k: (v if rows else None) for k, v in section_medians(rows).items()}
    return {**{f"max_{m}": result.worst(m, section) for m in ("one_minus_cos", "kl", "rel_max_abs")}, **med}


def write_parity_receipt(path: str | os.PathLike[str], receipt: dict) -> Path:
    import jsonschema

    from bitnet.receipts.policy import load_schema

    jsonschema.validate(receipt, load_schema("parity-receipt.schema.json"))
    return atomic_write_text(path, json.dumps(receipt, indent=2) + "\n")
