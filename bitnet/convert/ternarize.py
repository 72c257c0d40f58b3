"""Projection weights -> (ternary int8 [out, in], per-tensor scale), as the model defines them.

Master weights: absmean, exactly the arithmetic of transformers' `WeightQuant` and both upstream
converters' `weight_quant` (float32 throughout):

    mean = |W|.mean().clamp(min=1e-5);  s = 1 / mean
    t    = round(W * s).clamp(-1, 1)           (round half to even)
    value of a nonzero weight = t / s          (the per-tensor scale: fl32(1 / fl32(1 / mean)))

then cast back to the checkpoint's float type (f16 checkpoints keep an f16-rounded scale; bf16
ones are widened to float32 first, as both converters do).

The one ill-defined step is the float32 mean of millions of values: torch sums them in a
thread-count dependent order (measured: 7 of 20 2B-4T-shape tensors give a different last bit
with 1 and 2 threads), so a converter's output is byte-reproducible only with the same torch and
thread count. `absmean="torch"` uses torch exactly as the converters do (what the comparison
with them needs); `"exact"` uses a float64 sum rounded once to float32 (the correctly rounded
mean up to float64 error), which needs no torch and does not depend on the machine. `"auto"`
picks torch when it is installed.

Packed offline weights (`weight_scale`): the codes are unpacked and the scale taken from
`weight_scale` as the checkpoint's linear class applies it (see `bitnet.convert.checkpoint`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bitnet.convert.checkpoint import CheckpointError
from bitnet.convert.safetensors_io import to_float32

ABSMEAN_METHODS = ("auto", "torch", "exact")


def resolve_absmean(method: str) -> str:
    if method not in ABSMEAN_METHODS:
        raise CheckpointError(f"absmean method {method!r}; expected one of {ABSMEAN_METHODS}")
    if method == "exact":
        return "exact"
    try:
        import torch  # noqa: F401
    except ImportError:
        if method == "torch":
            from bitnet.errors import CapabilityMissing

            raise CapabilityMissing("--absmean torch needs torch (pip install 'bitnet-harness[hf]')") from None
        return "exact"
    return "torch"


def absmean(w32: np.ndarray, method: str) -> np.float32:
    """mean(|w|) as float32 (`method`: "torch" or "exact")."""
    if method == "torch":
        import torch

        return np.float32(torch.from_numpy(w32).abs().mean().item())
    return np.float32(np.abs(w32, dtype=np.float64).mean() if w32.size else 0.0)


@dataclass(frozen=True)
class Ternary:
    """One projection, ternarised."""

    t: np.ndarray  # int8 [out, in], values -1/0/+1
    scale: np.float32  # the value of a +1 weight
    #: the float type the upstream converters hold this tensor in ("f32" or "f16"): their float
    #: outputs (F16, TQ d) round `t * scale` from there
    work: str = "f32"
    #: where the converters' float `round(W * s).clamp(-1, 1) / s` is -0.0 (W < 0 rounding to
    #: zero): their float outputs keep that sign bit, so ours must for byte identity
    negative_zero: np.ndarray | None = None

    def folded(self) -> np.ndarray:
        """`t * scale` as float32, exactly the converters' values (signed zeros included,
        rounded through f16 when they hold the tensor in f16)."""
        v = self.t.astype(np.float32) * self.scale
        if self.negative_zero is not None:
            v[self.negative_zero] = np.float32(-0.0)
        return v.astype(np.float16).astype(np.float32) if self.work == "f16" else v


def ternarize_master(raw: np.ndarray, dtype: str, method: str) -> Ternary:
    """Absmean-ternarise a float master weight (raw safetensors view, `dtype` its spelling)."""
    w = to_float32(raw, dtype)
    mean = max(absmean(w, method), np.float32(1e-5))
    s = np.float32(1) / mean
    r = np.clip(np.round(w * s), -1, 1)
    t = r.astype(np.int8)
    negative_zero = np.signbit(r) & (t == 0)
    value = np.float32(1) / s
    work = "f16" if dtype == "F16" else "f32"
    if work == "f16":
        value = np.float32(np.float16(value))
    return Ternary(t, np.float32(value), work, negative_zero if negative_zero.any() else None)


def unpack_packed(raw: np.ndarray, out_f: int, name: str) -> np.ndarray:
    """uint8 [out/4, in] (transformers `pack_weights`) -> int8 [out, in]."""
    if raw.dtype != np.uint8 or raw.ndim != 2 or raw.shape[0] * 4 != out_f:
        raise CheckpointError(f"{name}: packed weight has dtype {raw.dtype}, shape {list(raw.shape)}; "
                              f"expected uint8 [{out_f // 4}, in] (4 ternary rows per byte row)")
    codes = raw[None, :, :] >> np.array([0, 2, 4, 6], np.uint8)[:, None, None] & 3
    if codes.size and codes.max() > 2:
        r = int(np.argwhere(codes == 3)[0][1])
        raise CheckpointError(f"{name}: packed row {r} holds code 3; ternary codes are 0, 1, 2")
    return (codes.reshape(out_f, raw.shape[1]).astype(np.int8) - np.int8(1))


def packed_scale(weight_scale: np.ndarray, linear_class: str, name: str) -> np.float32:
    ws = np.asarray(weight_scale, np.float32).reshape(-1)
    if ws.size != 1 or not np.isfinite(ws[0]) or ws[0] <= 0:
        raise CheckpointError(f"{name}_scale: weight_scale is {ws.tolist()[:4]}, expected one positive finite value")
    if linear_class == "autobitlinear":
        return np.float32(ws[0])
    return np.float32(np.float32(1) / ws[0])
