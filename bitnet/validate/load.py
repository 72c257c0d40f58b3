"""The engine's hook: validate a model at load, log each warning once, refuse failures.

Failures raise `ModelValidationError` naming every failed rule; warnings are logged once per
(file, rule, subject) per process; strict mode makes warnings errors too. Corrections are
applied only when the caller asks (`apply_corrections=True`, the CLIs' `--apply-corrections`),
and the report lists them so receipts can record them.
"""

from __future__ import annotations

import logging
import os
import threading

import numpy as np

from bitnet.errors import ConfigError
from bitnet.gguf.reader import GGUFReader, TensorInfo
from bitnet.validate import validate_reader
from bitnet.validate.policy import load_policy
from bitnet.validate.report import ValidationReport

log = logging.getLogger("bitnet.validate")
_WARNED: set[tuple] = set()
_LOCK = threading.Lock()


class ModelValidationError(ConfigError):
    """A model failed validation (or, in strict mode, warned): it must not run."""

    def __init__(self, message: str, report: ValidationReport):
        super().__init__(message)
        self.report = report


_REPORTS: dict[tuple, ValidationReport] = {}


def validate_at_load(reader: GGUFReader, *, strict: bool, apply_corrections: bool = False) -> ValidationReport:
    ident = _identity(reader)
    key = (*ident, apply_corrections)
    # one validation per unchanged file per process: benchmarks load the same model repeatedly
    with _LOCK:
        report = _REPORTS.get(key) if ident[1] else None
    if report is None:
        report = validate_reader(reader, apply_corrections=apply_corrections)
        with _LOCK:
            _REPORTS[key] = report
    bad = report.failures + (report.warnings if strict else [])
    if bad:
        what = "; ".join(f"{c.rule}: {c.message or c.subject}" for c in bad[:6]) + (f"; ... {len(bad) - 6} more" if len(bad) > 6 else "")
        mode = " (strict mode: warnings are errors)" if strict and report.warnings else ""
        raise ModelValidationError(f"{reader.path}: model validation failed{mode}: {what} "
                                   f"(run `bitnet validate {reader.path}` for every check)", report)
    for c in report.warnings:
        key = (*ident, c.rule, c.subject)
        with _LOCK:
            if key in _WARNED:
                continue
            _WARNED.add(key)
        log.warning("%s: validation warning %s: %s", reader.path, c.rule, c.message or c.subject)
    return report


def corrected_norm(reader: GGUFReader, t: TensorInfo, arch: str) -> np.ndarray | None:
    """The F32 gains of a norm stored as F16/BF16, when the policy's correction for that
    applies to this architecture; None when no correction applies."""
    pol = load_policy().for_arch(arch)
    if pol is None:
        return None
    for c in pol.corrections.values():
        if c["fixes"] == "tensors.type" and c["role"] == "norm" and t.type_name in c["from_types"]:
            v = reader.array(t)
            if t.type_name == "BF16":
                from bitnet.quant.floats import from_bf16_bits

                return from_bf16_bits(v)
            return v.astype(np.float32)
    return None


def _identity(reader: GGUFReader) -> tuple:
    """(resolved path, size, mtime_ns, inode, policy file): a rewritten file is validated
    anew; size 0 (stat failed) disables the cache."""
    from bitnet.validate.policy import default_policy_path

    try:
        st = os.stat(reader.path)
        return (str(os.path.realpath(reader.path)), st.st_size, st.st_mtime_ns, st.st_ino, str(default_policy_path()))
    except OSError:
        return (str(reader.path), 0, 0, 0, "")
