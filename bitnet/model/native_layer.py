"""A transformer block in three native calls (bitnet/kernels/native/layer.c) instead of ~25
Python-level ops: the per-token glue that stood between the native kernels and the bandwidth
ceiling (issue 21 item 2).

`NativeBlocks.for_model(model)` says whether a forward pass may take this path and returns the
per-layer C descriptions (built once per model). It may only when the result is the per-op
path's bit for bit and nothing that hooks into the per-op path is in use:
- the native backend is active, nothing is being recorded (bitnet.model.record: taps and the
  forced inputs of layer-wise checks need the per-op path);
- every op the block runs is the one bitnet_model would run natively: no planted fault
  (crossval.faults) has replaced rms_norm, rope_neox, causal_attention or a method of the model;
- every projection has a native kernel for its activations (I2_S x86 x per-token int8,
  TQ2_0/TQ1_0 x Q8_K).
Otherwise BitNetModel.block runs as before. The attention between the two calls is the C one
(attention.c) under profiles with attn_ggml, else bitnet_model.attend (NumPy/BLAS); a SiLU FFN's
activation is bitnet_model.gated between the last two (NumPy's exp, which C's need not match);
the KV cache append stays in Python (KVCache checks every position and reports F16 overflow).

The run log gets one record per kernel that ran, with its real id (the variant each C kernel
returned), the bytes and rows the per-op path records, and the time C measured around it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from bitnet.kernels.ids import KernelId
from bitnet.kernels.runlog import KERNEL_LOG

#: C format code and kernel-id stem per (format tag, activation profile): bn_linear's table
_FMT = {("i2s_x86", "per-token-absmax"): (0, "i2s_x86"), ("tq2_0", "q8_k-block256"): (1, "tq2_0"),
        ("tq1_0", "q8_k-block256"): (2, "tq1_0")}
_RMS = KernelId("", "f32", "rms_norm", "native").render()
_RMS_GGML = KernelId("", "f32", "rms_norm_ggml", "native").render()
_ROPE = KernelId("", "f32", "rope_neox", "native").render()
_RELU2 = KernelId("", "", "ffn_relu2_mul", "native").render()


@dataclass
class _Proj:
    c: Any  # ffi bn_proj *
    stem: str
    nbytes: int
    keep: Any  # the weight buffer the pointer points into


class _Scratch:
    """One thread's q/k/v/gate/up buffers for T tokens and the C views of them, made once per
    (thread, T) instead of on every block call (the allocations and pointer casts were a fifth
    of the Python time per layer)."""

    def __init__(self, ffi: Any, T: int, c: Any) -> None:
        self.q = np.empty((T, c.n_head, c.head_dim), np.float32)
        self.k = np.empty((T, c.n_head_kv, c.head_dim), np.float32)
        self.v = np.empty((T, c.n_head_kv * c.head_dim), np.float32)
        # the [n_kv_heads, T, head_dim] views KVCache.append copies from
        self.k_heads = self.k.transpose(1, 0, 2)
        self.v_heads = self.v.reshape(T, c.n_head_kv, c.head_dim).transpose(1, 0, 2)
        self.gate, self.up = np.empty((T, c.n_ff), np.float32), np.empty((T, c.n_ff), np.float32)
        self.qp, self.kp, self.vp, self.gatep, self.upp = (ffi.cast("float *", a.ctypes.data)
                                                           for a in (self.q, self.k, self.v, self.gate, self.up))
        self.sec5, self.sec6, self.sec3 = ffi.new("double[5]"), ffi.new("double[6]"), ffi.new("double[3]")
        self.var3, self.var4, self.var1 = ffi.new("int[3]"), ffi.new("int[4]"), ffi.new("int[1]")


class NativeBlocks:
    """Per-layer C descriptions of a model's projections (made once, on first use)."""

    def __init__(self, model: Any) -> None:
        from bitnet.kernels.native import backend as nb

        nb.activate()
        self.ffi, self.lib = nb._FFI, nb._LIB
        self.model, self.profile = model, model.profile
        prof = model.profile
        self.fused_round = int(any(prof.act_for(w.flavor) == "per-token-absmax" for w in model.layers[0].proj.values())
                               and prof.i8_fused_round)
        # the RMSNorm form the profile asks for (ops.rms_norm ggml=) and the run-log id it records
        self.rms_ggml = int(prof.rms_ggml)
        self.rms_id = _RMS_GGML if prof.rms_ggml else _RMS
        self.layers = [{f: self._proj(getattr(layer, f)) for f in ("wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down")}
                       for layer in model.layers]
        self.threads, self.cap = 1, -1
        self._keep = [[np.ascontiguousarray(getattr(layer, f), np.float32)
                       for f in ("attn_norm", "attn_sub_norm", "ffn_norm", "ffn_sub_norm")] for layer in model.layers]
        self.norms = [tuple(self.ffi.cast("float *", a.ctypes.data) for a in arrs) for arrs in self._keep]
        self.scale = float(np.float32(1.0) / np.sqrt(np.float32(model.config.head_dim)))
        # where attention runs, decided once: inside bn_layer_mid in either ggml order (attn_c 0 =
        # the fork's, 1 = upstream's, as attention_ggml(build=) passes them; upstream only where
        # the profile does not round q to F16 first, which attend() does in NumPy), else -1:
        # bitnet_model.attend between the calls (BLAS order, or NumPy when native glue is off)
        from bitnet.model import bitnet_model as bm

        self.build = _attn_build(prof)
        native = bm._native_attention(self.build)
        self.attn_c = (0 if native and self.build in (True, "bitnet.cpp") else
                       1 if native and self.build == "llama.cpp" and not prof.q_f16 else -1)
        self._local = threading.local()

    def _proj(self, lin: Any) -> _Proj:
        w = lin.weight
        code, stem = _FMT[(w.format.tag(w), self.profile.act_for(w.flavor))]
        raw = np.ascontiguousarray(w.raw).view(np.uint8).reshape(-1)
        p = self.ffi.new("bn_proj *")
        p.w = self.ffi.cast("uint8_t *", raw.ctypes.data)
        p.n_out, p.n_in, p.fmt = w.out_features, w.in_features, code
        p.wscale = float(np.float32(w.scale)) if code == 0 else 0.0
        p.has_scale = int(lin.scale is not None)
        p.scale = float(np.float32(lin.scale)) if lin.scale is not None else 0.0
        return _Proj(p, stem, w.nbytes, raw)

    @classmethod
    def for_model(cls, model: Any) -> NativeBlocks | None:
        """The model's NativeBlocks when this forward pass may run blocks natively, else None."""
        from bitnet.kernels import dispatch
        from bitnet.model import bitnet_model as bm
        from bitnet.model import record as _record

        if dispatch.get_backend() != "native" or _record.active() is not None:
            return None
        if not (bm._native_glue("rms_norm") and bm._native_glue("rope_neox")
                and bm._native_glue("causal_attention") and _pristine(model)):
            return None
        if model.config.n_embd != model.config.n_head * model.config.head_dim:
            return None
        # cached per (model, its layer list, its profile): a copy.copy view of the model
        # (bitnet.model.layerwise) that swaps its layers gets its own
        cached = model.__dict__.get("_native_blocks")
        if cached is None or cached[0] is not model or cached[1] is not model.layers or cached[2] is not model.profile:
            prof = model.profile
            ok = all((w.format.tag(w), prof.act_for(w.flavor)) in _FMT for layer in model.layers
                     for w in layer.proj.values())
            cached = (model, model.layers, prof, cls(model) if ok else None)
            model.__dict__["_native_blocks"] = cached
        blocks = cached[3]
        if blocks is not None:  # this pass's thread count (cap -1: the dispatcher's variant cap)
            from bitnet.kernels.native.backend import THREADS

            blocks.threads = THREADS[0]
        return blocks

    def _scratch(self, T: int) -> _Scratch:
        """This thread's buffers for a T-token block, with their C pointers cast once (two
        threads may run the same model, so they are per thread, not per model)."""
        local: dict[int, _Scratch] = self._local.__dict__.setdefault("by_t", {})
        sc = local.get(T)
        if sc is None:
            if len(local) > 4:  # prompts of many lengths: keep the memory bounded
                local.clear()
            sc = local[T] = _Scratch(self.ffi, T, self.model.config)
        return sc

    def block(self, i: int, x: np.ndarray, step: Any) -> np.ndarray:
        """BitNetModel.block(i, ...) natively: the residual stream after layer i."""
        from bitnet.kernels.native.backend import _kv_rows
        from bitnet.model import bitnet_model as bm

        m, c = self.model, self.model.config
        ps, (n_attn, n_attn_sub, n_ffn, n_ffn_sub) = self.layers[i], self.norms[i]
        ffi, lib = self.ffi, self.lib
        x = np.array(x, np.float32, order="C", copy=True)
        T, D, F, H, Hkv, hd, eps = len(x), c.n_embd, c.n_ff, c.n_head, c.n_head_kv, c.head_dim, float(c.rms_eps)
        sc = self._scratch(T)
        cos, sin = np.ascontiguousarray(step.cos, np.float32), np.ascontiguousarray(step.sin, np.float32)
        threads, cap, fr, rg = self.threads, self.cap, self.fused_round, self.rms_ggml
        xp = ffi.from_buffer("float[]", x)  # from_buffer: a fifth of a cast of .ctypes.data
        if lib.bn_layer_qkv(xp, T, D, n_attn, eps, rg, ps["wq"].c, ps["wk"].c, ps["wv"].c, fr,
                            ffi.from_buffer("float[]", cos), ffi.from_buffer("float[]", sin),
                            H, Hkv, hd, sc.qp, sc.kp, sc.vp, threads, cap, sc.sec5, sc.var3):
            raise MemoryError("native block could not allocate its buffers")
        step.cache.append(i, step.pos0, sc.k_heads, sc.v_heads)
        K, V = step.cache.view(i, step.pos0 + T)
        o_in, attn_c = ffi.NULL, self.attn_c
        if attn_c < 0:  # attention as BitNetModel.attention calls it (C or NumPy; its own run-log record)
            o = np.ascontiguousarray(bm.attend(sc.q, K, V, step.pos0, m.profile.q_f16, step.single, self.build),
                                     np.float32)
            o_in = ffi.from_buffer("float[]", o)
            K = V = np.zeros((1, 1, hd), np.float32)
        K, V = _kv_rows(K), _kv_rows(V)
        if K.strides != V.strides:
            K, V = np.ascontiguousarray(K), np.ascontiguousarray(V)
        # ReLU^2: the FFN's second half runs in bn_layer_mid's region too (nothing of ours between);
        # SiLU is NumPy's exp (bitnet_model.gated records itself), so bn_layer_ffn follows it
        relu2 = c.ffn_act == "relu2"
        if lib.bn_layer_mid(xp, T, D, o_in, sc.qp, H, hd, ffi.cast("void *", K.ctypes.data),
                            ffi.cast("void *", V.ctypes.data), Hkv, K.shape[1], K.strides[0] // K.itemsize,
                            int(K.dtype == np.float16), int(step.pos0), self.scale, max(attn_c, 0), n_attn_sub, n_ffn,
                            eps, rg, ps["wo"].c, ps["w_gate"].c, ps["w_up"].c, fr, sc.gatep, sc.upp, n_ffn_sub,
                            ps["w_down"].c if relu2 else ffi.NULL, F, sc.sec3, sc.var1, threads, cap, sc.sec6, sc.var4):
            raise MemoryError("native block could not allocate its buffers")
        if not relu2:
            f = np.ascontiguousarray(bm.gated(c.ffn_act, sc.gate, sc.up, m.profile.attn_ggml), np.float32)
            if lib.bn_layer_ffn(xp, T, D, F, sc.gatep, sc.upp, ffi.from_buffer("float[]", f), n_ffn_sub, eps, rg,
                                ps["w_down"].c, fr, threads, cap, sc.sec3, sc.var1):
                raise MemoryError("native block could not allocate its buffers")
        KERNEL_LOG.record_many(self._records(i, T, attn_c >= 0, K, V, sc))
        return x

    def _records(self, i: int, T: int, attn_in_c: bool, K: np.ndarray, V: np.ndarray, sc: _Scratch) -> list:
        """The run-log records of one block: each kernel's id for the variant it returned, the
        bytes and rows the per-op path records, and the seconds C measured."""
        ps, rms_id, act, F = self.layers[i], self.rms_id, T * self.model.config.n_embd * 4, self.model.config.n_ff
        sec5, sec6, sec3, var3, var4, var1 = sc.sec5, sc.sec6, sc.sec3, sc.var3, sc.var4, sc.var1
        kid = self._kid
        recs = [(rms_id, act, T, sec5[0]),
                (kid(ps["wq"], var3[0], T), ps["wq"].nbytes, T, sec5[1]),
                (kid(ps["wk"], var3[1], T), ps["wk"].nbytes, T, sec5[2]),
                (kid(ps["wv"], var3[2], T), ps["wv"].nbytes, T, sec5[3]),
                (_ROPE, sc.q.nbytes + sc.k.nbytes, T, sec5[4])]
        if attn_in_c:
            recs.append((f"attention_kv{K.dtype.itemsize * 8}_native", K.nbytes + V.nbytes, T, sec6[0]))
        recs += [(rms_id, act, T, sec6[1]),
                 (kid(ps["wo"], var4[1], T), ps["wo"].nbytes, T, sec6[2]),
                 (rms_id, act, T, sec6[3]),
                 (kid(ps["w_gate"], var4[2], T), ps["w_gate"].nbytes, T, sec6[4]),
                 (kid(ps["w_up"], var4[3], T), ps["w_up"].nbytes, T, sec6[5])]
        if self.model.config.ffn_act == "relu2":
            recs.append((_RELU2, 2 * T * F * 4, T, sec3[0]))
        recs += [(rms_id, T * F * 4, T, sec3[1]),
                 (kid(ps["w_down"], var1[0], T), ps["w_down"].nbytes, T, sec3[2])]
        return recs

    @staticmethod
    def _kid(p: _Proj, variant: int, T: int) -> str:
        """The projection's kernel id for the variant that ran (rendered once per combination)."""
        key = (p.stem, variant, T == 1)
        kid = _KIDS.get(key)
        if kid is None:
            from bitnet.kernels.native import variant_name

            kid = KernelId(p.stem, "", "gemv" if T == 1 else "gemm", "native", variant_name(variant)).render()
            _KIDS[key] = kid
        return kid


_KIDS: dict[tuple[str, int, bool], str] = {}


def _attn_build(prof: Any) -> bool | str:
    """The `ggml` argument BitNetModel.attention passes to attend() for this profile (a profile
    that names its ggml build has `attn_build`; older ones only the bitnet.cpp flag)."""
    if hasattr(type(prof), "attn_build"):
        return prof.attn_build or False
    return prof.attn_ggml


def _pristine(model: Any) -> bool:
    """No method the per-op block calls has been replaced (a planted fault patches the class)."""
    from bitnet.model import bitnet_model as bm

    cls = type(model)
    return (cls is bm.BitNetModel or all(getattr(cls, n) is getattr(bm.BitNetModel, n) for n in _METHODS)) and all(
        getattr(bm.BitNetModel, n) is _ORIGINAL[n] for n in _METHODS) and all(
        getattr(bm, n) is _ORIG_FUNCS[n] for n in _ORIG_FUNCS)


_METHODS = ("block", "attention", "ffn", "linear", "lm_head")
_ORIGINAL: dict[str, Any] = {}
_ORIG_FUNCS: dict[str, Any] = {}


def _remember() -> None:
    """The originals, taken when this module is first imported (before any fault is planted:
    bitnet_model imports this module at its own import)."""
    from bitnet.model import bitnet_model as bm

    for n in _METHODS:
        _ORIGINAL[n] = getattr(bm.BitNetModel, n)
    for n in ("norm", "rope", "attend", "gated", "rms_norm", "rope_neox", "causal_attention", "_native_glue",
              "_native_attention"):
        _ORIG_FUNCS[n] = getattr(bm, n)
