"""Shared helpers for the test suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("bitnet-convert", "bitnet convert comparisons (tests/test_convert_upstream.py)")
    group.addoption("--bitnet-converter-src", metavar="DIR", default=None,
                    help="microsoft/BitNet checkout (utils/convert-hf-to-gguf-bitnet.py, 3rdparty/llama.cpp/gguf-py) "
                    "to compare `bitnet convert` with; default: found above --bitnet-cpp-dir when that is inside one")
    group.addoption("--llama-converter-src", metavar="DIR", default=None,
                    help="llama.cpp source (convert_hf_to_gguf.py, gguf-py) to compare `bitnet convert` with; "
                    "default: the llama-cpp-python sdist unpacked by `python -m crossval.setup`")


def find_libggml_base(cpp_dir: str | None) -> Path | None:
    """libggml-base.so of a llama.cpp build: --bitnet-cpp-dir / BITNET_CPP_DIR, or the
    reference cache that `python -m crossval.setup` fills."""
    roots = [cpp_dir, os.environ.get("BITNET_CPP_DIR")]
    try:
        from bitnet.files.cache import cache_dir

        roots += [str(p) for p in cache_dir("reference").glob("*")]
    except Exception:  # pragma: no cover - cache dir not creatable
        pass
    for root in filter(None, roots):
        for cand in Path(root).rglob("libggml-base.so"):
            return cand
    return None


@pytest.fixture(scope="session")
def libggml_base(pytestconfig):
    path = find_libggml_base(pytestconfig.getoption("--bitnet-cpp-dir"))
    if path is None:
        pytest.skip("libggml-base.so not found: build the reference (python -m crossval.setup) or pass --bitnet-cpp-dir")
    import ctypes

    return ctypes.CDLL(str(path))


# -- receipts (tests/test_receipts_*.py) -------------------------------------------------------
RECEIPTS = Path(__file__).resolve().parents[1] / "fixtures" / "receipts"


@pytest.fixture(scope="session")
def receipt_base_model(tmp_path_factory) -> Path:
    """The model `fixtures/receipts/good/base.json` was measured on: the default tiny I2_S model,
    which the synthesiser reproduces byte for byte (its sha256 is checked by the tests)."""
    from bitnet.synth import synthesize

    return synthesize(tmp_path_factory.mktemp("receipt-base") / "base.gguf", fmt="i2_s", seed=0)


@pytest.fixture(scope="session")
def measured_receipt(tmp_path_factory, bitnet_model_factory):
    """(model, receipt path, receipt) of a real `bitnet benchmark` run made in this session on a
    freshly synthesised I2_S model: the one place tests get a live measurement from."""
    import io
    import json

    from bitnet.cli import IO
    from bitnet.cli import main as bitnet_main

    model = bitnet_model_factory(fmt="i2_s", seed=3)
    out = tmp_path_factory.mktemp("receipt") / "inference.json"
    o, e = io.StringIO(), io.StringIO()
    rc = bitnet_main(["benchmark", "--model", str(model), "--tokens", "6", "--deterministic",
                      "--backend", "numpy", "--out", str(out)], IO(o, e))
    assert rc == 0, e.getvalue()
    return model, out, json.loads(out.read_text())
