"""Kernel ids as a structured value, rendered to the strings receipts carry.

A kernel id names what executed: the weights it read (format, I2_S layout, `i8cache` when the
cached int8 copy was read), the activations it took, the operation, the backend and, for native
kernels, the SIMD variant that ran. The rendered strings are lowercase words joined by `_`:

    numpy   <weights>_<acts>_<op>_numpy       i2s_x86_i8act_gemm_numpy, f16_f32act_gemm_numpy
    native  <weights>[_<acts>]_<variant>_<op> i2s_x86_avxvnni_gemv, f16_f32act_avx2_gemm
    cuda    <weights>[_<acts>]_cuda_<op>      i2s_x86_cuda_gemm, tq2_0_q8k_cuda_gemm
    ops     <op>[_<acts>]_<backend>           rms_norm_f32_numpy, attention_kv16_numpy

`KernelId.parse` reads a rendered string back into its fields, so a checker can ask for the
backend or the weights of a kernel instead of searching substrings.
"""

from __future__ import annotations

from dataclasses import dataclass

#: native variants, in the order of the C kernels' return value
NATIVE_VARIANTS = ("scalar", "avx2", "avxvnni")
MATMUL_OPS = ("gemm", "gemv")
ACT_TAGS = ("f32act", "i8act", "q8k")


@dataclass(frozen=True)
class KernelId:
    weights: str  # "" for an op without a weight (norms, attention, ...)
    activations: str  # "i8act", "q8k", "f32act", a dtype tag, or ""
    op: str  # "gemm", "gemv", "rms_norm", ...
    backend: str  # "numpy", "native", "cuda"
    variant: str = ""  # native: "scalar", "avx2", "avxvnni"

    def render(self) -> str:
        if not self.weights:
            parts: tuple[str, ...] = (self.op, self.activations, self.backend)
        elif self.backend == "native":
            parts = (self.weights, self.activations, self.variant, self.op)
        elif self.backend == "cuda":
            parts = (self.weights, self.activations, "cuda", self.op)
        else:
            parts = (self.weights, self.activations, self.op, self.backend)
        return "_".join(p for p in parts if p)

    def __str__(self) -> str:
        return self.render()

    @classmethod
    def parse(cls, s: str) -> KernelId:
        """The fields of a rendered id (the inverse of render for every id this project emits).
        Element-wise ops are told from matmuls by their op word not being gemm/gemv."""
        words = s.split("_")
        if len(words) >= 3 and words[-2] == "cuda" and words[-1] in MATMUL_OPS:
            w, a = _split_acts(words[:-2])
            return cls(w, a, words[-1], "cuda")
        if len(words) >= 3 and words[-1] in MATMUL_OPS and words[-2] in NATIVE_VARIANTS:
            w, a = _split_acts(words[:-2])
            return cls(w, a, words[-1], "native", words[-2])
        if len(words) >= 3 and words[-2] in MATMUL_OPS:
            w, a = _split_acts(words[:-2])
            return cls(w, a, words[-2], words[-1])
        return cls("", "", "_".join(words[:-1]), words[-1])


def _split_acts(words: list[str]) -> tuple[str, str]:
    if words and words[-1] in ACT_TAGS:
        return "_".join(words[:-1]), words[-1]
    return "_".join(words), ""
