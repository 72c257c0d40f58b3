"""Shared helpers for the test suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def find_libggml_base(cpp_dir: str | None) -> Path | None:
    """libggml-base.so of a llama.cpp build: --bitnet-cpp-dir / BITNET_CPP_DIR, or the
    reference cache that `python -m crossval.setup` fills."""
    roots = [cpp_dir, os.environ.get("BITNET_CPP_DIR")]
    try:
        from bitnet.cache import cache_dir

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
