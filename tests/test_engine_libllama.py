"""The libllama: adapter (AC21) over the crossval bridge: same answers as the worker gives
directly, tokenizer, description, and crash isolation with the shared timeout. Run with
`pytest --crossval --bitnet-cpp-dir=DIR` (or `--engine=libllama:DIR` for the whole suite)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from bitnet.engines import EngineError, open_engine
from crossval.engine import LibllamaEngine
from crossval.pair import compare_engines

pytestmark = [pytest.mark.crossval, pytest.mark.ac21]
PROMPT = [381, 40, 41, 300, 7, 99, 256, 12, 5, 200, 17, 330]


@pytest.fixture(scope="module")
def lib(bitnet_cpp_dir):
    return open_engine(f"libllama:{bitnet_cpp_dir}")


@pytest.fixture(scope="module")
def model(lib, bitnet_model_factory):
    arch, fmt = lib.capabilities.loads[-1]  # tq2_0 upstream, f32 on the fork
    return bitnet_model_factory(arch=arch, fmt=fmt, seed=4)


def test_adapter_answers_what_the_worker_answers(lib, model, bitnet_cpp_dir):
    from crossval.runner import run_reference

    lib.load(model)
    out = lib.evaluate(PROMPT, 4)
    direct = run_reference(bitnet_cpp_dir, model, ids=PROMPT, n_greedy=4)
    assert direct.ok, direct.error
    np.testing.assert_array_equal(out.logits, direct.data["logits"])
    assert out.greedy == direct.data["greedy"].tolist()
    info = lib.describe()
    assert info.name.startswith("libllama (") and info.numerics in ("llama.cpp", "bitnet.cpp")
    assert info.build.endswith(("libllama.so", "libllama.dylib")) and info.version != ""
    ref = open_engine(f"reference:{info.numerics}")
    ref.load(model)
    texts = ["Hello world", "  spaces and ünïcode 中文"]
    assert lib.tokenize_many(texts, True, True) == ref.tokenize_many(texts, True, True)


def test_against_ours_in_the_claimed_numerics(lib, model):
    c = compare_engines(lib, open_engine(f"reference:{lib.describe().numerics}"), model, PROMPT, n_greedy=4)
    assert c.verdict == "pass", c.result.reason
    # libllama captures its layers, ours forces them: the pair is gated per layer (AC37)
    assert len(c.result.layers) == 2 and "the reference's layers on the engine's inputs" in c.result.reason


@pytest.mark.ac37
def test_per_layer_gate_of_a_libllama_pair_catches_a_fault_in_ours(lib, model, monkeypatch):
    from crossval.faults import FAULTS

    FAULTS["rms_eps_1e-6"].apply(monkeypatch.setattr)
    c = compare_engines(open_engine(f"reference:{lib.describe().numerics}"), lib, model, PROMPT, n_greedy=0,
                        end_to_end="report")
    assert c.verdict == "fail" and c.result.layer_first_divergence == 0, c.result.reason
    assert "the engine's layers on the reference's inputs" in c.result.reason


def test_a_crash_or_hang_in_the_worker_is_an_error_verdict(bitnet_cpp_dir, model):
    crash = LibllamaEngine("libllama:x", str(bitnet_cpp_dir),
                           worker_argv=[sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"])
    crash.load(model)
    with pytest.raises(EngineError, match=r"crash: the C\+\+ worker died with SIGSEGV"):
        crash.logits(PROMPT)
    hang = LibllamaEngine("libllama:x", str(bitnet_cpp_dir), timeout=1.0,
                          worker_argv=[sys.executable, "-c", "import time; time.sleep(30)"])
    c = compare_engines(hang, open_engine("reference"), model, PROMPT, n_greedy=0)
    assert c.verdict == "error" and "timeout: the C++ worker ran past 1 s" in c.result.reason


@pytest.mark.ac22
def test_crossval_spelling_runs_the_suite_as_libllama(pytester, bitnet_cpp_dir):
    """`pytest --crossval --bitnet-cpp-dir=DIR` (no test paths) is `pytest --engine=libllama:DIR`."""
    r = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-v", "--crossval", f"--bitnet-cpp-dir={bitnet_cpp_dir}",
                                      "-k", "describes_itself or tq2_0")
    out = r.stdout.str()
    assert "test_engine_describes_itself PASSED" in out, out[-2000:]
    if open_engine(f"libllama:{bitnet_cpp_dir}").capabilities.claims("bitnet", "tq2_0"):
        assert "test_logits_and_greedy[bitnet/tq2_0] PASSED" in out, out[-2000:]
    assert r.ret == 0
