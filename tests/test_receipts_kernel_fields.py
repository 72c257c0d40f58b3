"""The verifier reads kernel ids by their fields (issue 16): a GPU or native word in the wrong
field of an id no longer decides where the kernel ran, and an id that is not a rendered
`KernelId` fails R-KERNEL-ID, by name."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest

from bitnet.kernels.ids import KernelId, KernelIdError
from bitnet.receipts.policy import receipt_policy
from bitnet.receipts.rules import Ctx
from bitnet.receipts.verify import verify_receipt

HERE = Path(__file__).resolve().parents[1] / "fixtures" / "receipts"
sys.path.insert(0, str(HERE))
import make_bad  # noqa: E402

BASE = json.loads((HERE / "good" / "base.json").read_text())


def _renamed(old: str, new: str) -> dict:
    r = copy.deepcopy(BASE)
    make_bad._rename_kernels(old, new)(r)
    assert any(k["id"] == new for k in r["kernels"]), new
    return r


@pytest.mark.ac28
@pytest.mark.parametrize("old, new, substring_rule", [
    # `_cuda_` inside an element-wise op's name: a substring check called it a GPU kernel on a
    # CPU receipt (R-BACKEND-KERNELS); its backend field is numpy
    ("rms_norm_f32_numpy", "rms_norm_cuda_f32_numpy", "R-BACKEND-KERNELS"),
    # `cublas` inside a matmul's weights field: the same
    ("i2s_x86_i8act_gemm_numpy", "i2s_x86cublas_i8act_gemm_numpy", "R-BACKEND-KERNELS"),
    # `avx512` inside a NumPy matmul's weights field: a word search asked the CPU for
    # avx512f (R-KERNEL-ISA); only a native kernel's variant field names an instruction set
    ("i2s_x86_i8act_gemm_numpy", "i2s_avx512_x86_i8act_gemm_numpy", "R-KERNEL-ISA"),
])
def test_a_marker_in_the_wrong_field_is_not_misclassified(old, new, substring_rule):
    r = _renamed(old, new)
    r["machine"]["cpu_flags"] = [f for f in r["machine"]["cpu_flags"] if f != "avx512f"]
    c = Ctx(r, receipt_policy())
    assert c.kind(new) == "numpy" and not c.is_gpu(new) and not c.is_native(new)
    assert c.is_quant(new) == new.startswith("i2s_")
    result = verify_receipt(r)
    assert substring_rule not in result.failed_rules
    assert result.failed_rules == []


@pytest.mark.ac28
def test_the_same_words_in_the_right_field_still_fail():
    """The fields decide both ways: the GPU backend field on a CPU receipt and a native avx512
    variant on a CPU without avx512f still fail their rules."""
    assert "R-BACKEND-KERNELS" in verify_receipt(_renamed("rms_norm_f32_numpy", "rms_norm_f32_cuda")).failed_rules
    r = _renamed("i2s_x86_i8act_gemm_numpy", "i2s_x86_avx512_gemv")
    r["machine"]["cpu_flags"] = [f for f in r["machine"]["cpu_flags"] if f != "avx512f"]
    assert verify_receipt(r).failed_rules == ["R-KERNEL-ISA"]


@pytest.mark.ac28
@pytest.mark.parametrize("forged", [
    "i2s_x86_i8act_gemm_cuda",  # a cuda matmul renders as ..._cuda_gemm
    "i2s_x86_i8act_gemm_gpu",  # no such backend
    "i2s_x86_i8act_gemm",  # no backend, no variant
])
def test_an_id_that_does_not_parse_fails_r_kernel_id(forged):
    with pytest.raises(KernelIdError, match=forged):
        KernelId.parse(forged)
    result = verify_receipt(_renamed("i2s_x86_i8act_gemm_numpy", forged))
    assert "R-KERNEL-ID" in result.failed_rules
    msg = next(o.message for o in result.results if o.rule == "R-KERNEL-ID")
    assert forged in msg
