"""Numerics profiles: the rounding points that make our forward pass match one engine.

A profile is data, passed down to the forward pass; nothing branches on an engine's name.

- `reference`: the model's own math (BitNet b1.58 paper, HF transformers): per-token absmax
  int8 activations before every projection, ternary weights, everything else float32, exact
  rope, F32 KV cache, `output.weight` if present else tied embeddings.
- `llama.cpp`: upstream llama.cpp on CPU: activations converted to each weight type's
  `vec_dot_type` (Q8_K blocks of 256 for TQ1_0/TQ2_0, F16 for F16 weights, none for F32), F32
  KV cache (the crossval bridge sets type_k = type_v = F32), rope angles computed iteratively in
  float, lm_head always `token_embd` with its input rounded to F16 when that matrix is F16 (for
  one row and for many: ggml-cpu's F16 vec_dot_type, measured ~4e-4 relative on logits), and
  attention in upstream ggml-cpu's order, bit for bit (`attn_upstream`), every RMSNorm in
  ggml's arithmetic (`rms_ggml`).
- `bitnet.cpp`: Microsoft's fork: per-token int8 activations for I2_S, F16 KV cache, Q rounded
  to F16 for Q.K, and with a single-row batch the attention probabilities and the lm_head
  input rounded to F16 too (../shared/spec/MODEL.md, bitnet.cpp numerics), every RMSNorm in
  ggml's arithmetic (`rms_ggml`, the same loop in the fork's ggml.c).
- `bitnet.cpp-tl2`: the same, with TL2 projections computed as bitnet.cpp's TL2 LUT kernels
  compute them for one token (`tl2-lut` activations, wrapping int16 tile sums;
  bitnet.kernels.numpy_kernels.gemm_tl2_lut).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bitnet.errors import ConfigError


@dataclass(frozen=True)
class NumericsProfile:
    name: str
    #: weight flavor family -> activation treatment before the matmul
    #: ("none", "f16", "per-token-absmax", "q8_k-block256")
    act: dict[str, str] = field(hash=False)
    kv_dtype: np.dtype = np.dtype(np.float32)
    q_f16: bool = False
    single_row_f16: bool = False
    rope_iterative_f32: bool = False
    lm_head_tok_embd: bool = False  # ignore output.weight, as both C++ engines do for BitNet
    #: round the lm_head input to F16 for every batch (an F16 head's vec_dot_type is F16 in
    #: upstream ggml-cpu: `ggml_compute_forward_mul_mat` converts src1 before any F16 path)
    lm_head_f16: bool = False
    #: attention as bitnet.cpp's ggml computes it, bit for bit (bitnet.model.ggml_attention:
    #: F16 q.k dots in ggml_vec_dot_f16's order, ggml_v_expf softmax, tinyBLAS p.v)
    attn_ggml: bool = False
    #: int8 activation ties rounded as bitnet.cpp's fused `nearest_int(x * s)` rounds them
    #: (bitnet.kernels.activations.fused_round_ties)
    i8_fused_round: bool = False
    #: attention as upstream llama.cpp 0.3.36's ggml-cpu computes it (F32 KV cache, no flash
    #: attention), bit for bit (bitnet.model.ggml_attention, build "llama.cpp": F32 q.k dots in
    #: ggml_vec_dot_f32's order, ggml_v_expf softmax, tinyBLAS / vec_dot_f32 p.v). Unlike
    #: attn_ggml it touches nothing but the attention (SiLU stays NumPy's)
    attn_upstream: bool = False
    #: every RMSNorm (attn_norm, attn_sub_norm, ffn_norm, ffn_sub_norm, output_norm) as ggml's
    #: ggml_compute_forward_rms_norm_f32 computes it, bit for bit, in both engines (squares in
    #: float, summed in double in order, mean to float, + eps in float: ops.rms_norm(ggml=True))
    rms_ggml: bool = False

    @property
    def attn_build(self) -> str | None:
        """Whose ggml attention this profile reproduces (ggml_attention.BUILDS), or None for
        NumPy/BLAS float attention."""
        if self.attn_ggml:
            return "bitnet.cpp"
        if self.attn_upstream:
            return "llama.cpp"
        return None

    def act_for(self, flavor: str) -> str:
        fam = flavor_family(flavor)
        try:
            return self.act[fam]
        except KeyError:
            raise ConfigError(f"numerics profile {self.name!r} has no activation path for {flavor} weights") from None


def flavor_family(flavor: str) -> str:
    f = flavor.lower()
    if f.startswith("i2_s") or f.startswith("i2s"):
        return "i2_s"
    if f.startswith("tq"):
        return "tq"
    if f in ("f32", "f16", "bf16", "tl2", "tl1"):
        return f
    return "ternary"  # bitnet32, qk256: engines of the Rust-port lineage


_ALL = ("i2_s", "tq", "f32", "f16", "bf16", "ternary", "tl2", "tl1")
_BITNET_CPP = {"i2_s": "per-token-absmax", "f32": "none", "f16": "f16", "ternary": "per-token-absmax",
               "tl1": "per-token-absmax"}
#: knobs every bitnet.cpp profile shares (F16 KV cache, Q rounded to F16, ...)
_BITNET_CPP_KNOBS: dict[str, Any] = dict(kv_dtype=np.dtype(np.float16), q_f16=True, single_row_f16=True,
                                         rope_iterative_f32=True, lm_head_tok_embd=True, rms_ggml=True)
#: plus the x86 build's arithmetic: ggml's AVX2 attention and gcc's fused int8 rounding (the TL1
#: profile describes an ARM build, where neither is modelled)
_BITNET_CPP_X86_KNOBS: dict[str, Any] = {**_BITNET_CPP_KNOBS, "attn_ggml": True, "i8_fused_round": True}

PROFILES: dict[str, NumericsProfile] = {
    "reference": NumericsProfile("reference", {k: "per-token-absmax" for k in _ALL}),
    "llama.cpp": NumericsProfile(
        "llama.cpp",
        {"tq": "q8_k-block256", "f32": "none", "f16": "f16", "bf16": "bf16"},
        rope_iterative_f32=True,
        lm_head_tok_embd=True,
        lm_head_f16=True,
        attn_upstream=True,
        rms_ggml=True,
    ),
    "bitnet.cpp": NumericsProfile(
        "bitnet.cpp",
        {**_BITNET_CPP, "tl2": "per-token-absmax"},
        **_BITNET_CPP_X86_KNOBS,
    ),
    # bitnet.cpp built with its TL2 LUT kernels (GGML_BITNET_X86_TL2), token by token: TL2
    # projections run the LUT arithmetic (activations `tl2-lut`, wrapping int16 tile sums)
    "bitnet.cpp-tl2": NumericsProfile(
        "bitnet.cpp-tl2",
        {**_BITNET_CPP, "tl2": "tl2-lut"},
        **_BITNET_CPP_X86_KNOBS,
    ),
}


# bitnet.cpp built with its TL1 LUT kernels (GGML_BITNET_ARM_TL1, ARM only): TL1 projections run
# the LUT arithmetic of utils/codegen_tl1.py -- per_tensor_quant (127/max, no floor, round to
# nearest even: the same quantizer as TL2's, `tl2-lut`), pair sums looked up and summed per BK
# tile in wrapping int16 lanes, tiles in int32: gemm_tl2_lut with no two-weight part. The rest
# is the x86 bitnet.cpp profile minus the AVX2 attention emulation (an ARM build sums in NEON
# orders, not modelled): decode-only checks on x86, no ARM build to compare against here
PROFILES["bitnet.cpp-tl1"] = NumericsProfile(
    "bitnet.cpp-tl1",
    {**_BITNET_CPP, "tl2": "per-token-absmax", "tl1": "tl2-lut"},
    **_BITNET_CPP_KNOBS,
)


def get_profile(name: str) -> NumericsProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ConfigError(f"unknown numerics profile {name!r}; known: {', '.join(PROFILES)}") from None


def default_profile(arch: str, flavors: set[str]) -> str:
    """bitnet.cpp-tl2 / -tl1 for a model with TL2 / TL1 tensors (only bitnet.cpp computes those
    formats, and only with its LUT kernels), bitnet.cpp for an I2_S `bitnet-b1.58` model,
    llama.cpp for a TQ `bitnet` model, else the reference math."""
    fams = {flavor_family(f) for f in flavors}
    if "tl2" in fams:
        return "bitnet.cpp-tl2"
    if "tl1" in fams:
        return "bitnet.cpp-tl1"
    if arch == "bitnet-b1.58" and "i2_s" in fams:
        return "bitnet.cpp"
    if arch == "bitnet" and "tq" in fams:
        return "llama.cpp"
    return "reference"
