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


@cache
def thresholds(profile: str) -> dict:
    from bitnet.receipts.policy import load_yaml, policy_dir

    profiles = load_yaml(policy_dir() / "parity.yml")["profiles"]
    if profile not in profiles:
        raise ConfigError(f"unknown parity profile {profile!r}; known: {', '.join(profiles)}")
    return dict(profiles[profile])


@dataclass
class PositionMetrics:
    position: int
    cosine: float
    max_abs: float
    kl: float
    top1_ours: int
    top1_ref: int
    top5_overlap: float


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

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def position_metrics(ours: np.ndarray, ref: np.ndarray) -> list[PositionMetrics]:
    if ours.shape != ref.shape:
        raise ConfigError(f"logits shapes differ: ours {ours.shape}, reference {ref.shape}")
    a, b = ours.astype(np.float64), ref.astype(np.float64)
    cos = (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-300)
    lp_a, lp_b = _log_softmax(a), _log_softmax(b)
    kl = (np.exp(lp_b) * (lp_b - lp_a)).sum(-1)
    top5_a = np.argsort(-a, axis=-1)[:, :5]
    top5_b = np.argsort(-b, axis=-1)[:, :5]
    out = []
    for i in range(a.shape[0]):
        out.append(PositionMetrics(i, float(cos[i]), float(np.abs(a[i] - b[i]).max()), float(max(kl[i], 0.0)),
                                   int(a[i].argmax()), int(b[i].argmax()),
                                   len(set(top5_a[i]) & set(top5_b[i])) / 5.0))
    return out


def compare(ours: np.ndarray, ref: np.ndarray, profile: str = "exact", *, greedy_ours=(), greedy_ref=()) -> ParityResult:
    th = thresholds(profile)
    pos = position_metrics(ours, ref)
    bad = [p.position for p in pos if p.cosine < th["min_cosine"] or p.kl > th["max_kl"] or p.top1_ours != p.top1_ref]
    top1 = float(np.mean([p.top1_ours == p.top1_ref for p in pos])) if pos else 1.0
    top5 = float(np.mean([p.top5_overlap for p in pos])) if pos else 1.0
    res = ParityResult("pass", "", profile, pos)
    reasons = []
    if bad:
        res.first_divergence = bad[0]
        p = pos[bad[0]]
        reasons.append(f"position {p.position} diverges: cosine {p.cosine:.6f}, KL {p.kl:.3g}, "
                       f"top-1 {p.top1_ours} vs {p.top1_ref}")
    if top1 < th["min_top1_agreement"]:
        reasons.append(f"top-1 agreement {top1:.3f} < {th['min_top1_agreement']}")
    if top5 < th["min_top5_overlap"]:
        reasons.append(f"top-5 overlap {top5:.3f} < {th['min_top5_overlap']}")
    if len(greedy_ref):
        go, gr = list(map(int, greedy_ours)), list(map(int, greedy_ref))
        n = min(len(go), len(gr))
        matches = [go[i] == gr[i] for i in range(n)]
        res.greedy_ours, res.greedy_ref = go, gr
        res.greedy_match = float(np.mean(matches)) if n else 0.0
        res.greedy_first_divergence = next((i for i, m in enumerate(matches) if not m), None)
        if res.greedy_match < th["min_greedy_match"]:
            reasons.append(f"greedy exact-match {res.greedy_match:.3f} < {th['min_greedy_match']} "
                           f"(first divergence at generated token {res.greedy_first_divergence})")
    if reasons:
        res.verdict, res.reason = "fail", "; ".join(reasons)
    else:
        worst = min(pos, key=lambda p: p.cosine) if pos else None
        res.reason = f"{len(pos)} positions, min cosine {worst.cosine:.7f}" if worst else "no positions"
    return res


def skipped(reason: str, profile: str = "exact") -> ParityResult:
    return ParityResult("skipped", reason, profile)


def errored(reason: str, profile: str = "exact") -> ParityResult:
    return ParityResult("error", reason, profile)


PARITY_SCHEMA_VERSION = "2.0.0"  # 2.x: both sides are named engines (1.x assumed ours vs libllama)


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
        **({"corrections": list(corrections)} if corrections else {}),
    }


def write_parity_receipt(path: str | os.PathLike[str], receipt: dict) -> Path:
    import jsonschema

    from bitnet.receipts.policy import load_schema

    jsonschema.validate(receipt, load_schema("parity-receipt.schema.json"))
    return atomic_write_text(path, json.dumps(receipt, indent=2) + "\n")
