"""TL2 against a real bitnet.cpp TL2 build (run with `pytest --crossval --bitnet-cpp-dir=DIR`,
DIR a microsoft/BitNet checkout built with -DBITNET_X86_TL2=ON after `utils/codegen_tl2.py`
generated its kernels for the tiny preset's shapes and tiles: docs/how-to/crossval.md, TL2).

bitnet.cpp's TL2 kernels at that commit are wrong in one decode mode: the batched path runs
8-row (and larger) blocks through `three_qgemm_lut<8>` / `two_qgemm_lut<8>`, which write every
batch row's result to row 0 of the block (codegen_tl2.py: `C[i] = CBits[i + bs * BM]`, not
`C[i + bs * BM]`). Single rows are right. So: a prompt under 8 tokens (1-row blocks) and any
prompt fed token by token pass the exact gate; a prompt of 8 or more tokens in one batch must
FAIL, at position 0, layer 0. The gate is never loosened to pass it."""

from __future__ import annotations

import pytest

from crossval.compare import crossval_model

pytestmark = [pytest.mark.crossval, pytest.mark.ac36]

PROMPT = [381, 40, 41, 300, 7, 99, 256, 12, 5, 200, 17, 330]


@pytest.fixture(scope="module")
def reference(bitnet_cpp_dir):
    from crossval.reference import locate
    from crossval.tl_build import tl_build

    ref = locate(bitnet_cpp_dir)
    return ref, tl_build(ref)


@pytest.fixture(scope="module")
def tl2_model(reference, bitnet_model_factory):
    """The tiny TL2 `bitnet` model, when the given build has TL2 kernels for its shapes."""
    from bitnet.errors import BridgeError
    from crossval.tl_build import check_model

    ref, tl = reference
    if tl is None or tl.flavor != "tl2":
        pytest.skip(f"needs a bitnet.cpp build with TL2 kernels (-DBITNET_X86_TL2=ON) as --bitnet-cpp-dir; "
                    f"{ref.root} ({ref.api} API) exports no ggml_qgemm_lut")
    path = bitnet_model_factory(arch="bitnet", fmt="tl2", seed=3)
    try:
        check_model(ref.root, path)
    except BridgeError as e:
        pytest.skip(f"the TL2 build's kernels were generated for other shapes or tiles than the tiny preset's: {e}")
    return path


def test_tl2_short_batch_and_decode_steps_pass_the_exact_gate(bitnet_cpp_dir, tl2_model):
    """7 tokens in one batch run as seven 1-row blocks, and every decode step is one row: the
    LUT profile reproduces bitnet.cpp exactly there."""
    r = crossval_model(bitnet_cpp_dir, tl2_model, PROMPT[:7], profile="exact", numerics="bitnet.cpp-tl2",
                       n_greedy=4, strict=True)
    assert r.verdict == "pass", r.reason
    assert r.family == "int8-act" and r.layers and len(r.decode_positions) == 4


def test_tl2_prompt_token_by_token_passes_the_exact_gate(bitnet_cpp_dir, tl2_model):
    r = crossval_model(bitnet_cpp_dir, tl2_model, PROMPT, profile="exact", numerics="bitnet.cpp-tl2",
                       n_greedy=4, strict=True, prompt_mode="stepwise")
    assert r.verdict == "pass", r.reason
    assert "stepwise" in r.reason


def test_tl2_batched_8_row_kernel_fails_localised(bitnet_cpp_dir, tl2_model):
    """The same ids in one batch: the 8-row block is bitnet.cpp's fault, reported at the first
    position and the first layer (teacher-forced on libllama's own layer input)."""
    r = crossval_model(bitnet_cpp_dir, tl2_model, PROMPT[:8], profile="exact", numerics="bitnet.cpp-tl2",
                       n_greedy=2, strict=True)
    assert r.verdict == "fail"
    assert r.first_divergence == 0 and r.layer_first_divergence == 0, r.reason


def test_a_tl2_file_tiled_otherwise_than_the_build_is_refused(bitnet_cpp_dir, tl2_model, tmp_path):
    from bitnet.gguf.constants import ValueType
    from bitnet.gguf.reader import GGUFReader
    from bitnet.quant.tl_config import KEY_KERNEL_CONFIG
    from tests._defects import Plant, rewrite

    with GGUFReader(tl2_model) as r:
        ini = r.get(KEY_KERNEL_CONFIG)
    other = ini.replace("bm = 256\n", "bm = 128\n", 1)  # the first shape's row tile
    assert other != ini
    p = rewrite(tl2_model, tmp_path / "m.gguf", Plant(meta={KEY_KERNEL_CONFIG: (other, ValueType.STRING)}))
    r = crossval_model(bitnet_cpp_dir, p, PROMPT[:4], numerics="bitnet.cpp-tl2", n_greedy=0)
    assert r.verdict == "error"
    assert "tiled BM=128" in r.reason and "regenerate" in r.reason


def test_a_tl2_file_against_a_build_without_tl_kernels_is_refused(bitnet_cpp_dir, reference, bitnet_model_factory):
    ref, tl = reference
    if tl is not None:
        pytest.skip(f"{ref.root} has {tl.flavor.upper()} kernels")
    r = crossval_model(bitnet_cpp_dir, bitnet_model_factory(arch="bitnet", fmt="tl2", seed=3), PROMPT[:4],
                       numerics="bitnet.cpp-tl2", n_greedy=0)
    assert r.verdict == "error" and "ggml_qgemm_lut" in r.reason, r.reason


def test_a_tl2_file_without_the_harness_key_takes_the_builds_kernel_config(bitnet_cpp_dir, tl2_model, tmp_path,
                                                                             monkeypatch):
    """bitnet.cpp's converter writes no kernel config into the file; against a TL2 build both
    sides then read the build's include/kernel_config.ini (the one its kernels were made from)."""
    from bitnet.quant.tl_config import ENV_KERNEL_CONFIG, KEY_KERNEL_CONFIG
    from tests._defects import Plant, rewrite

    monkeypatch.delenv(ENV_KERNEL_CONFIG, raising=False)
    monkeypatch.delenv("BITNET_CPP_DIR", raising=False)
    p = rewrite(tl2_model, tmp_path / "m.gguf", Plant(meta={KEY_KERNEL_CONFIG: (None, None)}))
    r = crossval_model(bitnet_cpp_dir, p, PROMPT[:5], profile="exact", numerics="bitnet.cpp-tl2", n_greedy=2)
    assert r.verdict == "pass", r.reason
