"""`bitnet convert` against the converters that define each format, on the same synthetic
checkpoint: bitnet.cpp's `utils/convert-hf-to-gguf-bitnet.py` (I2_S, TL1, TL2, F16, F32; arch
bitnet-b1.58) and llama.cpp's `convert_hf_to_gguf.py` (TQ1_0, TQ2_0, F16, F32; arch bitnet).
Every tensor must be byte-identical.

The converters run from their sources in a subprocess (tests/converters/run_*.py say what they
patch around them, and why); they need torch and safetensors. Sources: --bitnet-converter-src /
--llama-converter-src, or found from --bitnet-cpp-dir / the sdist `crossval.setup` unpacked.
Nothing is fetched; a missing source skips with the reason. Both converters sum |W| with torch,
whose float32 mean depends on the thread count, so ours runs with `absmean="torch"` in a process
with the same default thread count.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bitnet.convert import convert
from bitnet.convert.synthetic import write_checkpoint
from bitnet.gguf.reader import GGUFReader

pytestmark = pytest.mark.ac34
DRIVERS = Path(__file__).parent / "converters"
BITNET_CPP_TYPES = ("i2_s", "tl1", "tl2", "f16", "f32")
LLAMA_CPP_TYPES = ("tq1_0", "tq2_0", "f16", "f32")


def _needs_oracle_deps() -> None:
    pytest.importorskip("torch", reason="the upstream converters need torch ([hf] extra)")
    pytest.importorskip("safetensors", reason="the upstream converters read checkpoints with safetensors")


def bitnet_cpp_src(config: pytest.Config) -> Path:
    cands = [config.getoption("--bitnet-converter-src"), config.getoption("--bitnet-cpp-dir")]
    for c in filter(None, cands):
        for d in (Path(c), *Path(c).resolve().parents):
            if (d / "utils" / "convert-hf-to-gguf-bitnet.py").is_file() and (d / "3rdparty/llama.cpp/gguf-py").is_dir():
                return d
    pytest.skip("no microsoft/BitNet checkout: pass --bitnet-converter-src=DIR (utils/convert-hf-to-gguf-bitnet.py "
                "and 3rdparty/llama.cpp/gguf-py), or a --bitnet-cpp-dir inside one")


def llama_cpp_src(config: pytest.Config) -> Path:
    c = config.getoption("--llama-converter-src")
    if c is None:
        from bitnet.files.cache import cache_dir
        from bitnet.toolchain.sdist import LLAMA_CPP_PYTHON_VERSION

        c = cache_dir("sdist") / f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}" / "vendor" / "llama.cpp"
    d = Path(c)
    if not (d / "convert_hf_to_gguf.py").is_file() or not (d / "gguf-py").is_dir():
        pytest.skip(f"no llama.cpp source at {d}: run `python -m crossval.setup` or pass --llama-converter-src=DIR")
    return d


def _run(args: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": ""}  # the converters import their own gguf-py, not ours
    p = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=900)
    assert p.returncode == 0, f"{args[0]} failed:\n{p.stderr[-3000:]}"


def _tensors(path: Path) -> dict[str, tuple[str, tuple[int, ...], bytes]]:
    with GGUFReader(path) as r:
        return {t.name: (t.type_name, t.shape, np.asarray(r.raw(t)).tobytes()) for t in r.tensors}


def _ours(ck: Path, out: Path, types: tuple[str, ...], arch: str) -> dict[str, Path]:
    return {t: convert(ck, out / f"ours-{t}.gguf", t, arch=arch, absmean="torch").path for t in types}


def _compare_bitnet_cpp(theirs_dir: Path, ours: Path, typ: str) -> None:
    """bitnet.cpp's recorded tensors vs ours. A TL tensor is written by it as the tile data plus
    a separate `<name>_scale` f32; ours keeps the scale in the 32-byte tail ggml sizes it with."""
    got = np.load(theirs_dir / f"{typ}.npz")
    kinds = json.loads((theirs_dir / f"{typ}.json").read_text())
    mine = _tensors(ours)
    names = [n for n in got.files if not (n.endswith("_scale") and n.removesuffix("_scale") in got.files)]
    assert sorted(names) == sorted(mine), f"{typ}: tensor names differ"
    for n in names:
        their = got[n].tobytes()
        gtype, _, our = mine[n]
        assert gtype == kinds[n], f"{typ}: {n} is {gtype}, bitnet.cpp writes {kinds[n]}"
        if n + "_scale" in got.files:
            scale = got[n + "_scale"].tobytes()
            their = their + bytes(len(our) - len(their))
            their = their[: len(our) - 32] + scale + bytes(28)
        assert our == their, f"{typ}: {n} differs from bitnet.cpp's bytes"


@pytest.fixture(scope="module")
def master_ckpt(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("hf-master") / "ckpt", "tiny", dtype="bf16", seed=3)


def test_bitnet_cpp_converter_byte_identical(pytestconfig, master_ckpt, tmp_path):
    _needs_oracle_deps()
    src = bitnet_cpp_src(pytestconfig)
    ours = _ours(master_ckpt, tmp_path, BITNET_CPP_TYPES, "bitnet-b1.58")
    specs = []
    for t in BITNET_CPP_TYPES:
        if t.startswith("tl"):  # the converter tiles by the ini in its working directory: give it ours
            with GGUFReader(ours[t]) as r:
                ini = tmp_path / f"{t}.ini"
                ini.write_text(r.get("bitnet_harness.tl_kernel_config"))
            specs.append(f"{t}={ini}")
        else:
            specs.append(t)
    _run([str(DRIVERS / "run_bitnet_cpp_converter.py"), str(src), str(master_ckpt), str(tmp_path), *specs])
    for t in BITNET_CPP_TYPES:
        _compare_bitnet_cpp(tmp_path, ours[t], t)


def test_llama_cpp_converter_byte_identical(pytestconfig, master_ckpt, tmp_path):
    _needs_oracle_deps()
    src = llama_cpp_src(pytestconfig)
    ours = _ours(master_ckpt, tmp_path, LLAMA_CPP_TYPES, "bitnet")
    _run([str(DRIVERS / "run_llama_cpp_converter.py"), str(src), str(master_ckpt), str(tmp_path), *LLAMA_CPP_TYPES])
    for t in LLAMA_CPP_TYPES:
        theirs, mine = _tensors(tmp_path / f"{t}.gguf"), _tensors(ours[t])
        assert sorted(theirs) == sorted(mine), f"{t}: tensor names differ"
        for n, (gtype, shape, data) in theirs.items():
            assert mine[n][:2] == (gtype, shape), f"{t}: {n} is {mine[n][:2]}, llama.cpp writes {(gtype, shape)}"
            assert mine[n][2] == data, f"{t}: {n} differs from llama.cpp's bytes"


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["f32", "f16"])
def test_bitnet_cpp_converter_other_master_dtypes(pytestconfig, tmp_path, dtype):
    """f32 and f16 master weights (the converters keep f16 tensors in f16: the folded values and
    the I2_S scale are f16-rounded). bitnet.cpp's TL path asserts on an f16 scale, so TL is
    compared on f32 checkpoints only."""
    _needs_oracle_deps()
    src = bitnet_cpp_src(pytestconfig)
    ck = write_checkpoint(tmp_path / "ckpt", "tiny", dtype=dtype, seed=5)
    types = ("i2_s", "f16") if dtype == "f16" else ("i2_s", "f16", "f32")
    ours = _ours(ck, tmp_path, types, "bitnet-b1.58")
    _run([str(DRIVERS / "run_bitnet_cpp_converter.py"), str(src), str(ck), str(tmp_path), *types])
    for t in types:
        _compare_bitnet_cpp(tmp_path, ours[t], t)


@pytest.mark.slow
def test_bitnet_cpp_converter_packed_weights(pytestconfig, tmp_path):
    """Packed offline weights (`weight_scale`, linear class bitlinear: y = (q @ w) / (ws * s)).
    bitnet.cpp's converter divides by weight_scale for F16 -- byte-identical with ours -- but for
    I2_S stores weight_scale itself as the tensor scale, where the model's scale is
    1 / weight_scale: the codes are identical and the scales are reciprocals."""
    _needs_oracle_deps()
    src = bitnet_cpp_src(pytestconfig)
    ck = write_checkpoint(tmp_path / "ckpt", "tiny", form="packed", seed=7)
    ours = _ours(ck, tmp_path, ("i2_s", "f16"), "bitnet-b1.58")
    _run([str(DRIVERS / "run_bitnet_cpp_converter.py"), str(src), str(ck), str(tmp_path), "i2_s", "f16"])
    _compare_bitnet_cpp(tmp_path, ours["f16"], "f16")
    theirs = np.load(tmp_path / "i2_s.npz")
    mine = _tensors(ours["i2_s"])
    checked = 0
    for n in theirs.files:
        if mine[n][0] != "I2_S":
            assert mine[n][2] == theirs[n].tobytes(), n
            continue
        t, o = theirs[n], np.frombuffer(mine[n][2], np.uint8)
        k = o.size - 32
        assert np.array_equal(t[:k], o[:k]), f"{n}: I2_S codes differ"
        their_scale, our_scale = t[k:k + 4].view("<f4")[0], o[k:k + 4].view("<f4")[0]
        assert our_scale == np.float32(1) / their_scale, (n, their_scale, our_scale)
        checked += 1
    assert checked == 14
