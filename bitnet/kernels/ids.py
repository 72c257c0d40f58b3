"""Kernel ids as a structured value, rendered to the strings receipts carry.

A kernel id names what executed: the weights it read (format, I2_S layout, `i8cache` when the
cached int8 copy was read), the activations it took, the operation, the backend and, for native
kernels, the SIMD variant that ran. The rendered strings are lowercase words joined by `_`:

    numpy   <weights>_<acts>_<op>_numpy       i2s_x86_i8act_gemm_numpy, f16_f32act_gemm_numpy
    native  <weights>[_<acts>]_<variant>_<op> i2s_x86_avxvnni_gemv, f16_f32act_avx2_gemm
    cuda    <weights>[_<acts>]_cuda_<op>      i2s_x86_cuda_gemm, tq2_0_q8k_cuda_gemm
    ops     <op>[_<acts>]_<backend>           rms_norm_f32_numpy, attention_kv16_numpy

`KernelId.parse` reads a rendered string back into its fields, so a checker can ask for the
backend or the weights of a kernel instead of searching substrings; a string that is not a
rendered id (bad grammar, no known backend, fields that do not render back to it) raises
`KernelIdError`: that is what a forged or garbled id in a receipt looks like.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: native variants, in the order of the C kernels' return value
NATIVE_VARIANTS = ("scalar", "avx2", "avxvnni")
MATMUL_OPS = ("gemm", "gemv")
ACT_TAGS = ("f32act", "i8act", "q8k")
#: SIMD variants a native kernel id may name: this build's, and those of other native builds
#: whose receipts the verifier reads (the ISA a receipt's CPU must have is checked by variant)
ISA_VARIANTS = (*NATIVE_VARIANTS, "avx512", "neon")
#: backends a kernel id may end in; cuBLAS is a GPU library a receipt may name for its lm_head
BACKENDS = ("numpy", "native", "cuda", "cublas")
GPU_BACKENDS = ("cuda", "cublas")
#: lowercase ASCII words of [a-z0-9] joined by single underscores
GRAMMAR = re.compile(r"^[a-z0-9]+(_[a-z0-9]+)*$")


class KernelIdError(ValueError):
    """A string that is not a rendered kernel id."""


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
        Element-wise ops are told from matmuls by their op word not being gemm/gemv. Raises
        `KernelIdError` for a string that is not a rendered id."""
        if not GRAMMAR.match(s):
            raise KernelIdError(f"kernel id {s!r}: expected lowercase [a-z0-9] words joined by '_'")
        k = cls._fields(s.split("_"))
        if k is None or k.backend not in BACKENDS or not k.op:
            raise KernelIdError(f"kernel id {s!r}: expected <weights>[_<acts>]_<op>_<backend>, "
                                f"<weights>[_<acts>]_<variant>_<op> or <op>_<backend> with a backend in {BACKENDS}")
        if k.render() != s:
            raise KernelIdError(f"kernel id {s!r}: its fields render to {k.render()!r}")
        return k

    @classmethod
    def _fields(cls, words: list[str]) -> KernelId | None:
        if len(words) >= 3 and words[-2] == "cuda" and words[-1] in MATMUL_OPS:
            w, a = _split_acts(words[:-2])
            return cls(w, a, words[-1], "cuda") if w else None
        if len(words) >= 3 and words[-1] in MATMUL_OPS and words[-2] in ISA_VARIANTS:
            w, a = _split_acts(words[:-2])
            return cls(w, a, words[-1], "native", words[-2]) if w else None
        if len(words) >= 3 and words[-2] in MATMUL_OPS:
            w, a = _split_acts(words[:-2])
            return cls(w, a, words[-2], words[-1]) if w else None
        if len(words) >= 2:
            return cls("", "", "_".join(words[:-1]), words[-1])
        return None


def _split_acts(words: list[str]) -> tuple[str, str]:
    if words and words[-1] in ACT_TAGS:
        return "_".join(words[:-1]), words[-1]
    return "_".join(words), ""
