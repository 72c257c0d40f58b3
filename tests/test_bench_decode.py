"""bench/bench_decode.py's C++ side (run with `pytest --crossval --bitnet-cpp-dir=DIR`): the
timing child reports the settings it ran with, and a build is described by its own files; and
`bitnet crossval --backend` (no C++ needed)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_decode.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_decode_under_test", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.crossval
def test_build_info_reads_the_build(bench, bitnet_cpp_dir):
    info = bench.build_info(bitnet_cpp_dir, "stated commit")
    assert info["api"] in ("upstream", "bitnet.cpp-fork")
    assert info["commit_stated"] == "stated commit"
    assert Path(info["libllama"]).is_file()
    if "cmake" in info:  # a build folder with its CMakeCache.txt
        assert "CMAKE_BUILD_TYPE" in info["cmake"]
    assert "AVX2" in info["system_info"] or "NEON" in info["system_info"], info["system_info"]


@pytest.mark.crossval
def test_cpp_timing_reports_matched_settings(bench, bitnet_cpp_dir, bitnet_model_factory):
    """The child times llama_decode only and says which K/V type, flash attention and OpenMP
    wait policy it ran with; an F16 cache is asked for and reported as such."""
    from crossval.reference import locate

    arch = "bitnet"
    fmt = "tq2_0" if locate(bitnet_cpp_dir).api == "upstream" else "i2_s"
    path = bitnet_model_factory(arch=arch, fmt=fmt, seed=7)
    bench.REPEAT[0] = 1
    r = bench.llama_cpp(bitnet_cpp_dir, path, [1, 2, 3, 4], 3, True)
    assert "error" not in r, r
    assert r["decode_tok_s"] > 0 and r["prefill_tok_s"] > 0
    assert (r["kv_cache"], r["flash_attn"], r["omp_wait_policy"]) == ("f16", False, "PASSIVE")
    assert r["timed"].startswith("llama_decode calls only")


@pytest.mark.parametrize("argv,engine", [
    (["--cpp-dir", "D", "--backend", "native"], "reference@native"),
    (["--cpp-dir", "D", "--profile", "llama.cpp", "--backend", "native"], "reference:llama.cpp@native"),
    (["--engine", "reference:bitnet.cpp", "--reference", "libllama:D", "--backend", "native"], "reference:bitnet.cpp@native"),
    (["--engine", "reference", "--reference", "libllama:D"], "reference"),
])
def test_crossval_backend_sets_our_engines_backend(argv, engine, tmp_path, monkeypatch):
    """`bitnet crossval --backend native` (issue 21: a 2B-class model times out on NumPy) is the
    @BACKEND of our engine's spec; no C++ build is needed to check that."""
    from bitnet.cli import build_parser
    from crossval.cli import _specs

    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.gguf").write_bytes(b"")
    (tmp_path / "D").mkdir()
    args = build_parser().parse_args(["crossval", "--model", "m.gguf", "--ids", "1", *argv])
    assert _specs(args)[0] == engine


@pytest.mark.parametrize("engine", ["hf:", "reference@numpy"])
def test_crossval_backend_refused_for_other_engines(engine, tmp_path, monkeypatch):
    from bitnet.cli import build_parser
    from bitnet.errors import ConfigError
    from crossval.cli import _specs

    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.gguf").write_bytes(b"")
    (tmp_path / "D").mkdir()
    args = build_parser().parse_args(["crossval", "--model", "m.gguf", "--ids", "1", "--engine", engine,
                                      "--backend", "native"])
    with pytest.raises(ConfigError, match="--backend native"):
        _specs(args)
