"""Flavor detection: which weight format a tensor really holds (AC1, AC2).

GGUF type id 36 means Microsoft I2_S in bitnet.cpp files, but the Rust port writes two other
layouts (BitNet32-F16, QK256) under the same id, and nothing but the tensor's byte size tells
them apart. This module is the one place that decides, from type id, shape and byte span:

- every candidate's expected byte count is computed from its size rule;
- a candidate matches EXACTLY when the span equals its size, or its size rounded up to the
  file's alignment (the padding the writer adds); exact matches win;
- otherwise a candidate within `SIZE_TOLERANCE` (0.1%) of the span is a within-tolerance
  match: accepted with exactly one warning per tensor in permissive mode, refused in strict
  mode with the tensor, expected bytes, actual bytes and the deviation;
- two matches of the same kind are an error listing every candidate's byte accounting.

An I2_S tensor (n/4 + 32 bytes) is therefore never taken for QK256 (n/4 bytes): the two sizes
differ by 32 bytes, which is less than 0.1% of any real tensor, so a detector that only
applies a tolerance confuses them and drops the I2_S scale. Exact matching cannot.

Every decision is logged once, in one fixed format (see `FlavorDecision.log_line`).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np

from bitnet.errors import FormatError, StrictModeError, strict_enabled
from bitnet.gguf.reader import TensorInfo
from bitnet.quant.formats import formats_for_type, get_format

log = logging.getLogger("bitnet.flavor")

#: The one size tolerance of the project: a within-tolerance match is at most 0.1% off.
SIZE_TOLERANCE = 0.001


class FlavorWarning(UserWarning):
    pass


@dataclass(frozen=True)
class Candidate:
    flavor: str
    expected_bytes: int


@dataclass(frozen=True)
class FlavorDecision:
    tensor: str
    type_id: int
    shape: tuple[int, ...]
    span: int  # bytes the tensor has in the file (up to the next tensor or the end)
    flavor: str
    expected_bytes: int  # what the chosen flavor's size rule says
    exact: bool
    deviation: float  # (span - expected) / expected; 0 for an exact match
    candidates: tuple[Candidate, ...]
    note: str = ""

    @property
    def log_line(self) -> str:
        how = "exact" if self.exact else f"within-tolerance dev={self.deviation * 100:+.4f}%"
        return (f"flavor tensor={self.tensor} type={self.type_id} shape={'x'.join(map(str, self.shape))} "
                f"bytes={self.span} -> {self.flavor} expected={self.expected_bytes} ({how})"
                + (f" note={self.note}" if self.note else ""))


def _n(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def candidates(type_id: int, shape: tuple[int, ...], type_name: str | None) -> list[Candidate]:
    """Every registered format a tensor of this type id and shape could hold, with its byte
    size (the format registry's size rules, in registration order)."""
    return [Candidate(f.name, f.tensor_bytes(shape)) for f in formats_for_type(type_id)
            if f.applies(shape, type_name)]


def _align(n: int, a: int) -> int:
    return (n + a - 1) // a * a


def detect_flavor(info: TensorInfo, *, alignment: int = 32, raw: np.ndarray | None = None,
                  strict: bool | None = None) -> FlavorDecision:
    """Decide `info`'s flavor. `raw` (the tensor's bytes) lets the I2_S scale be checked."""
    strict = strict_enabled(strict)
    cands = candidates(info.type_id, info.shape, info.type_name if info.ggml_type else None)
    span = info.span
    where = f"tensor {info.name!r} (type {info.type_id} {info.type_name}, shape {list(info.shape)}, {span} bytes in file)"
    if not cands:
        raise FormatError(f"{where}: no weight format of this project has that type and shape")
    if _n(info.shape) == 0:
        raise FormatError(f"{where}: a zero-size dimension; a weight tensor cannot be empty")
    # exact: the span is the size, or the size plus the writer's alignment padding; a match
    # that needs no padding beats one that does (only tiny tensors can have both)
    exact = [c for c in cands if span == c.expected_bytes] or \
        [c for c in cands if span == _align(c.expected_bytes, alignment)]
    accounting = "; ".join(f"{c.flavor}: {c.expected_bytes} bytes (dev {(span - c.expected_bytes) / c.expected_bytes * 100:+.4f}%)" for c in cands)
    note = ""
    if len(exact) > 1 and raw is not None:
        # sizes can coincide (I2_S and BitNet32-F16 both take 160 bytes for n = 512): keep the
        # candidates whose bytes decode validly, and say so
        valid = [c for c in exact if get_format(c.flavor).decodes(raw, _n(info.shape))]
        if len(valid) == 1:
            note = f"sizes of {[c.flavor for c in exact]} coincide; only {valid[0].flavor} decodes validly"
            exact = valid
    if len(exact) > 1:
        raise FormatError(f"{where}: ambiguous, matches {[c.flavor for c in exact]} exactly: {accounting}")
    if exact:
        c = exact[0]
        decision = FlavorDecision(info.name, info.type_id, info.shape, span, c.flavor, c.expected_bytes, True, 0.0, tuple(cands), note)
    else:
        near = [c for c in cands if abs(span - c.expected_bytes) <= SIZE_TOLERANCE * c.expected_bytes]
        if not near:
            raise FormatError(f"{where}: matches no flavor: {accounting}")
        if len(near) > 1:
            raise FormatError(f"{where}: ambiguous within the {SIZE_TOLERANCE:.1%} tolerance: {accounting}")
        c = near[0]
        dev = (span - c.expected_bytes) / c.expected_bytes
        decision = FlavorDecision(info.name, info.type_id, info.shape, span, c.flavor, c.expected_bytes, False, dev, tuple(cands))
        if strict:
            raise StrictModeError(
                f"{where}: strict mode refuses a within-tolerance match: expected {c.expected_bytes} bytes "
                f"for {c.flavor}, found {span} (deviation {dev * 100:+.4f}%); rewrite the tensor with its exact size"
            )
    if raw is not None:
        get_format(decision.flavor).check_bytes(raw, _n(info.shape), where)
    log.info(decision.log_line)
    if not decision.exact:
        warnings.warn(decision.log_line, FlavorWarning, stacklevel=2)
    return decision
