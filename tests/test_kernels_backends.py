"""The backend table: explicit status/activate, no side effects at import (issue 16)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bitnet.errors import ConfigError
from bitnet.kernels import backends
from bitnet.kernels.ids import KernelId


def test_importing_a_backend_module_does_nothing():
    """Importing the native and CUDA backend modules neither builds, raises nor caps BLAS
    threads; only activate() does (and only when a run selects the backend)."""
    code = ("import numpy, threadpoolctl\n"
            "before = [i['num_threads'] for i in threadpoolctl.threadpool_info() if i['user_api'] == 'blas']\n"
            "import bitnet.kernels.native.backend as nb, bitnet.kernels.cuda.backend\n"
            "after = [i['num_threads'] for i in threadpoolctl.threadpool_info() if i['user_api'] == 'blas']\n"
            "assert before == after, (before, after)\n"
            "assert nb._LIB is None\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr


def test_table_lists_every_backend_and_refuses_unknown_ones():
    assert list(backends.BACKENDS) == ["numpy", "native", "cuda"]
    assert backends.status("numpy") == (True, "NumPy reference kernels")
    ok, why = backends.status("cuda")
    assert isinstance(ok, bool) and why
    with pytest.raises(ConfigError, match="unknown backend 'tpu'"):
        backends.activate("tpu")
    if not ok:
        with pytest.raises(ConfigError, match="backend 'cuda' is not available"):
            backends.activate("cuda")


@pytest.mark.parametrize("s, fields", [
    ("i2s_x86_i8act_gemm_numpy", ("i2s_x86", "i8act", "gemm", "numpy", "")),
    ("i2s_x86_i8cache_i8act_gemm_numpy", ("i2s_x86_i8cache", "i8act", "gemm", "numpy", "")),
    ("tq2_0_q8k_gemm_numpy", ("tq2_0", "q8k", "gemm", "numpy", "")),
    ("i2s_x86_avxvnni_gemv", ("i2s_x86", "", "gemv", "native", "avxvnni")),
    ("f16_f32act_avx2_gemm", ("f16", "f32act", "gemm", "native", "avx2")),
    ("tq2_0_q8k_cuda_gemm", ("tq2_0", "q8k", "gemm", "cuda", "")),
    ("i2s_x86_cuda_gemm", ("i2s_x86", "", "gemm", "cuda", "")),
    ("rms_norm_f32_numpy", ("", "", "rms_norm_f32", "numpy", "")),
])
def test_kernel_ids_are_fields_rendered_to_the_receipt_strings(s, fields):
    k = KernelId.parse(s)
    assert (k.weights, k.activations, k.op, k.backend, k.variant) == fields
    assert k.render() == str(k) == s


def test_the_bitnet_library_never_imports_crossval():
    """Layering (issue 16): crossval imports bitnet; only the CLI's subcommand table names
    crossval, and it does so by module name."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "bitnet"
    pat = re.compile(r"^\s*(from|import)\s+crossval\b", re.M)
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py") if pat.search(p.read_text())]
    assert offenders == []


def test_formats_do_not_import_kernels():
    """Layering: bitnet.kernels runs formats; bitnet.quant (formats, detection, PackedWeight)
    never imports bitnet.kernels (the old quant.kernels <-> quant.weights cycle is gone)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "bitnet" / "quant"
    pat = re.compile(r"^\s*(from|import)\s+bitnet\.kernels\b", re.M)
    assert [p.name for p in root.glob("*.py") if pat.search(p.read_text())] == []
