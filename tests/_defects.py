"""Planted mis-conversions of tiny synthesised models (issue 22).

Each defect rewrites a clean `bitnet synth` model into a copy with one thing wrong, the way a
broken converter would write it. `DEFECTS` maps a defect name to (source model kwargs, the
rewrite, the validation rule that must name it). The rewrite streams tensors through the
project's GGUF writer: metadata edits, tensor edits (a function of the tensor's bytes), drops.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bitnet.gguf.constants import ValueType
from bitnet.gguf.reader import GGUFReader, TensorInfo
from bitnet.gguf.writer import GGUFWriter

A = "bitnet-b1.58"
#: a tensor edit: (info, raw bytes copy) -> (new bytes, new GGUF shape, new type name or id)
TensorEdit = Callable[[TensorInfo, np.ndarray], tuple[np.ndarray, tuple[int, ...], object]]


@dataclass
class Plant:
    meta: dict[str, tuple[object, ValueType | None]] = field(default_factory=dict)  # value None: drop
    tensors: dict[str, TensorEdit | None] = field(default_factory=dict)  # None: drop


def rewrite(src: Path, dst: Path, plant: Plant) -> Path:
    with GGUFReader(src) as r:
        w = GGUFWriter(dst, alignment=r.alignment)
        for k, f in r.fields.items():
            if k in plant.meta:
                continue
            w.add_field(f)
        for k, (v, vt) in plant.meta.items():
            if v is not None:
                w.add(k, v, vt)
        for t in r.tensors:
            if t.name in plant.tensors:
                edit = plant.tensors[t.name]
                if edit is None:
                    continue
                data, shape, gtype = edit(t, np.array(r.raw(t)))
                w.add_tensor(t.name, data, shape=shape, gtype=gtype)
            else:
                w.add_tensor(t.name, np.array(r.raw(t)), shape=t.shape, gtype=t.type_id, nbytes=t.nbytes)
        return w.write()


# -- tensor edits -----------------------------------------------------------------------------
def f32_map(fn: Callable[[np.ndarray], np.ndarray]) -> TensorEdit:
    def edit(t: TensorInfo, raw: np.ndarray):
        v = raw.view("<f4").reshape(t.np_shape)
        return np.ascontiguousarray(fn(v.copy()), "<f4"), t.shape, "F32"
    return edit


def f16_map(fn: Callable[[np.ndarray], np.ndarray]) -> TensorEdit:
    def edit(t: TensorInfo, raw: np.ndarray):
        v = raw.view("<f2").reshape(t.np_shape).astype(np.float32)
        with np.errstate(over="ignore"):
            return np.ascontiguousarray(fn(v), "<f2"), t.shape, "F16"
    return edit


def as_f16() -> TensorEdit:
    def edit(t: TensorInfo, raw: np.ndarray):
        return raw.view("<f4").astype("<f2"), t.shape, "F16"
    return edit


def transpose_f32() -> TensorEdit:
    def edit(t: TensorInfo, raw: np.ndarray):
        v = raw.view("<f4").reshape(t.np_shape)
        return np.ascontiguousarray(v.T), tuple(reversed(t.shape)), "F32"
    return edit


def i2s_scale(fn: Callable[[float], float]) -> TensorEdit:
    def edit(t: TensorInfo, raw: np.ndarray):
        n = t.n_elements
        s = float(raw[n // 4: n // 4 + 4].view("<f4")[0])
        raw[n // 4: n // 4 + 4] = np.array([fn(s)], "<f4").view(np.uint8)
        return raw, t.shape, t.type_id
    return edit


def i2s_zero_blocks(every: int) -> TensorEdit:
    """Every `every`-th group of 256 codes (64 packed bytes) set to code 1 (value 0)."""
    def edit(t: TensorInfo, raw: np.ndarray):
        n = t.n_elements
        codes = raw[: n // 4].reshape(-1, 64)
        codes[::every] = 0x55
        return raw, t.shape, t.type_id
    return edit


def tq2_all_zero() -> TensorEdit:
    def edit(t: TensorInfo, raw: np.ndarray):
        b = raw.reshape(-1, 66)
        b[:, :64] = 0x55  # every code 1 = value 0; the block scales stay
        return raw, t.shape, t.type_id
    return edit


def i2s_to_f32(scale_from: Callable[[float], float] = lambda s: s) -> TensorEdit:
    """An I2_S projection rewritten as F32 (ternary x scale), as a converter that skipped
    quantization for some tensors would write it."""
    from bitnet.quant import i2s

    def edit(t: TensorInfo, raw: np.ndarray):
        k, out = t.shape
        return i2s.dequantize(raw, out, k), t.shape, "F32"
    return edit


def gaussian_f32(seed: int = 7) -> TensorEdit:
    def edit(t: TensorInfo, raw: np.ndarray):
        rng = np.random.default_rng(seed)
        return (0.02 * rng.standard_normal(t.np_shape)).astype("<f4"), t.shape, "F32"
    return edit


def set_first(value: float) -> Callable[[np.ndarray], np.ndarray]:
    def fn(v: np.ndarray) -> np.ndarray:
        v.reshape(-1)[3] = value
        return v
    return fn


def ternary_norm(v: np.ndarray) -> np.ndarray:
    # absmean ternarisation of the gains (as a converter that quantizes every 2-D and 1-D tensor)
    s = np.abs(v).mean()
    return (np.clip(np.round(v / s), -1, 1) * s).astype(np.float32)


def scale_tensor(value: float) -> TensorEdit:
    def edit(t: TensorInfo, raw: np.ndarray):
        return np.array([value], "<f4"), t.shape, "F32"
    return edit


# -- the catalogue -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Defect:
    model: dict  # bitnet_model_factory kwargs of the clean source model
    plant: Callable[[str], Plant]  # arch -> what to change
    rule: str  # the rule that must fail and name it
    issue14: bool = False  # one of the 14 measured in the issue text


def _arch_key(suffix: str, value, vt=None) -> Callable[[str], Plant]:
    return lambda a: Plant(meta={f"{a}.{suffix}": (value, vt)})


TQ = {"fmt": "tq2_0", "embed_format": "f32"}
I2S = {"fmt": "i2_s"}
F32 = {"fmt": "f32"}
U32, F = ValueType.UINT32, ValueType.FLOAT32

DEFECTS: dict[str, Defect] = {
    # the 14 of the issue text
    "norm_zero": Defect(F32, lambda a: Plant(tensors={"blk.0.attn_norm.weight": f32_map(lambda v: v * 0)}), "norm.rms", True),
    "norm_x1e-4": Defect(F32, lambda a: Plant(tensors={"blk.0.ffn_norm.weight": f32_map(lambda v: v * 1e-4)}), "norm.rms", True),
    "norm_ternary": Defect(F32, lambda a: Plant(tensors={"blk.1.attn_sub_norm.weight": f32_map(ternary_norm)}), "norm.not_quantized", True),
    "norm_nan": Defect(F32, lambda a: Plant(tensors={"blk.1.ffn_sub_norm.weight": f32_map(set_first(np.nan))}), "values.finite", True),
    "embd_inf": Defect(TQ, lambda a: Plant(tensors={"token_embd.weight": f32_map(set_first(np.inf))}), "values.finite", True),
    "embd_x1e6": Defect(TQ, lambda a: Plant(tensors={"token_embd.weight": f32_map(lambda v: v * 1e6)}), "embedding.scale", True),
    "tq2_0_all_zero_projection": Defect(TQ, lambda a: Plant(tensors={"blk.0.ffn_up.weight": tq2_all_zero()}), "ternary.zero_blocks", True),
    "f32_non_ternary_projection": Defect(F32, lambda a: Plant(tensors={"blk.1.attn_v.weight": gaussian_f32()}), "projection.ternary", True),
    "ffn_down_transposed": Defect(F32, lambda a: Plant(tensors={"blk.0.ffn_down.weight": transpose_f32()}), "tensors.shape", True),
    "vocab_size_mismatch": Defect(F32, _arch_key("vocab_size", 300, U32), "vocab.matches_embedding", True),
    "rope_base_negative": Defect(F32, _arch_key("rope.freq_base", -10000.0, F), "rope.freq_base", True),
    "heads_do_not_divide_width": Defect(F32, _arch_key("attention.head_count", 3, U32), "config.heads_divide_width", True),
    "rms_eps_zero": Defect(F32, _arch_key("attention.layer_norm_rms_epsilon", 0.0, F), "rms_eps.range", True),
    "file_type_contradicts": Defect(TQ, lambda a: Plant(meta={"general.file_type": (40, U32)}), "file_type.consistent", True),
    # the further defects of the issue's Deliver 4
    "norm_stored_f16": Defect(I2S, lambda a: Plant(tensors={"blk.1.ffn_norm.weight": as_f16()}), "tensors.type"),
    "attn_k_transposed": Defect(F32, lambda a: Plant(tensors={"blk.1.attn_k.weight": transpose_f32()}), "tensors.shape"),
    "i2s_scale_dropped": Defect(I2S, lambda a: Plant(tensors={"blk.0.attn_q.weight": i2s_scale(lambda s: 1.0)}), "projection.scale_present"),
    "i2s_scale_squared": Defect(I2S, lambda a: Plant(tensors={"blk.1.ffn_gate.weight": i2s_scale(lambda s: s * s)}), "projection.gain"),
    "i2s_scale_zero": Defect(I2S, lambda a: Plant(tensors={"blk.0.attn_v.weight": i2s_scale(lambda s: 0.0)}), "projection.scale_present"),
    "scale_tensor_dropped": Defect({"arch": "bitnet", "fmt": "tq2_0"},
                                   lambda a: Plant(tensors={"blk.0.ffn_down.scale": None}), "projection.scale_present"),
    "scale_tensor_squared": Defect({"arch": "bitnet", "fmt": "tq2_0"},
                                   lambda a: Plant(tensors={"blk.1.attn_output.scale": scale_tensor(0.0625 ** 2)}), "projection.gain"),
    "i2s_zero_blocks": Defect(I2S, lambda a: Plant(tensors={"blk.1.ffn_up.weight": i2s_zero_blocks(10)}), "ternary.zero_blocks"),
    "rope_type_norm": Defect(I2S, _arch_key("rope.type", "norm"), "rope.type"),
    "arch_llama_with_bitnet_tensors": Defect(I2S, lambda a: Plant(meta={"general.architecture": ("llama", None)}), "arch.supported"),
    "f32_projections_claiming_i2s": Defect(I2S, lambda a: Plant(tensors={
        f"blk.1.{p}.weight": i2s_to_f32() for p in ("attn_q", "attn_k", "attn_v", "attn_output")}), "file_type.consistent"),
    "nan_in_i2s_scale": Defect(I2S, lambda a: Plant(tensors={"blk.1.attn_k.weight": i2s_scale(lambda s: float("nan"))}), "values.finite"),
    "inf_in_f32_projection": Defect(F32, lambda a: Plant(tensors={"blk.0.ffn_gate.weight": f32_map(set_first(np.inf))}), "values.finite"),
    "nan_in_scale_tensor": Defect({"arch": "bitnet", "fmt": "tq1_0"},
                                  lambda a: Plant(tensors={"blk.0.attn_q.scale": scale_tensor(float("nan"))}), "values.finite"),
    "nan_in_f16_embedding": Defect(I2S, lambda a: Plant(tensors={"token_embd.weight": f16_map(set_first(np.nan))}), "values.finite"),
}


def plant(factory, tmp: Path, name: str) -> Path:
    d = DEFECTS[name]
    kw = dict(d.model)
    arch = kw.get("arch", A)
    src = factory(**kw)
    return rewrite(src, tmp / f"{name}.gguf", d.plant(arch))
