"""A bitnet.cpp build with lookup-table (TL1/TL2) kernels as a crossval reference.

bitnet.cpp compiles its TL kernels for fixed weight shapes: `utils/codegen_tl2.py` (x86) or
`codegen_tl1.py` (ARM) writes `include/bitnet-lut-kernels.h` and `include/kernel_config.ini`
for a list of (M, K) shapes and tiles (BM, BK, bm), and the build (`-DBITNET_X86_TL2=ON` /
`-DBITNET_ARM_TL1=ON`) bakes them in. A TL tensor whose shape has no kernel is left uncomputed
(`ggml_qgemm_lut` matches (M, K) and does nothing otherwise), and one tiled with other
parameters is read in the wrong order; both give garbage logits, not an error. So before such
a build computes a TL file, the file's own tiles (`bitnet.quant.tl_config.tile_for`: its
metadata key, then the environment) are checked against the kernels the build was generated
for, and a mismatch is a BridgeError naming the tensor, both tilings and how to regenerate.

A build has TL kernels when its libraries export `ggml_qgemm_lut` (defined only under
GGML_BITNET_X86_TL2 / GGML_BITNET_ARM_TL1, src/ggml-bitnet-lut.cpp); which flavor is the
build's `BITNET_X86_TL2` / `BITNET_ARM_TL1` CMake cache entry, else the machine (x86: TL2).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from bitnet.errors import BridgeError
from bitnet.quant.tl_config import (
    INI_IN_CHECKOUT,
    KernelConfig,
    KernelConfigError,
    load_ini,
    tile_for,
)

TL_TYPES = {"TL1": "tl1", "TL2": "tl2"}


@dataclass(frozen=True)
class TLBuild:
    flavor: str  # "tl2" or "tl1"
    config: KernelConfig | None  # the checkout's include/kernel_config.ini (what the kernels were generated for)
    where: str  # where that ini was looked for


def _flavor(root: Path) -> str:
    for cache_file in [root / "build" / "CMakeCache.txt", *root.glob("build*/CMakeCache.txt")]:
        if cache_file.is_file():
            text = cache_file.read_text(errors="replace")
            if "BITNET_X86_TL2:BOOL=ON" in text:
                return "tl2"
            if "BITNET_ARM_TL1:BOOL=ON" in text:
                return "tl1"
    return "tl1" if platform.machine().lower() in ("arm64", "aarch64") else "tl2"


@cache
def _tl_build(libllama: str, root: str) -> TLBuild | None:
    try:
        dll = ctypes.CDLL(libllama)
    except OSError:
        return None  # locate() reports a library that does not load
    if not hasattr(dll, "ggml_qgemm_lut"):  # dlsym on the handle searches its dependencies (libggml)
        return None
    r = Path(root)
    ini = next((d / INI_IN_CHECKOUT for d in (r, *r.parents[:2]) if (d / INI_IN_CHECKOUT).is_file()), None)
    return TLBuild(_flavor(r), load_ini(ini) if ini else None, str(ini or r / INI_IN_CHECKOUT))


def tl_build(ref) -> TLBuild | None:
    """The TL kernels of a located build (crossval.reference.Reference), or None."""
    return _tl_build(str(ref.libllama), str(ref.root))


def check_model(cpp_dir: str | os.PathLike[str], model: str | os.PathLike[str]) -> None:
    """Raise BridgeError when `model` has TL tensors that the build at `cpp_dir` cannot compute
    as the file is tiled. Files without TL tensors, and unreadable ones (the worker says why),
    pass through untouched."""
    from bitnet.gguf.reader import GGUFReader

    try:
        reader = GGUFReader(model)
    except Exception:  # the worker loads it and reports what is wrong
        return
    with reader as r:
        tl = [t for t in r.tensors if t.type_name in TL_TYPES and len(t.shape) == 2]
        if not tl:
            return
        from crossval.reference import locate

        ref = locate(cpp_dir)
        b = tl_build(ref)
        kinds = sorted({TL_TYPES[t.type_name] for t in tl})
        if b is None:
            raise BridgeError(f"{model} has {'/'.join(k.upper() for k in kinds)} tensors, but {ref.libllama} was "
                              "built without bitnet.cpp's lookup-table kernels (BITNET_X86_TL2 / BITNET_ARM_TL1 "
                              "off; no ggml_qgemm_lut): pass a TL build (docs/how-to/crossval.md, TL2)")
        if kinds != [b.flavor]:
            raise BridgeError(f"{model} has {'/'.join(k.upper() for k in kinds)} tensors; the build at {ref.root} "
                              f"has {b.flavor.upper()} kernels")
        if b.config is None:
            raise BridgeError(f"{ref.root}: a {b.flavor.upper()} build without {b.where}: the shapes its kernels "
                              "were generated for are unknown, so a TL file cannot be checked against them")
        for t in tl:
            k, m = int(t.shape[0]), int(t.shape[1])
            try:
                mine = tile_for(r, t.name, m, k, b.flavor)
            except KernelConfigError as e:
                raise BridgeError(str(e)) from None
            theirs = b.config.find(m, k)
            regen = (f"regenerate the build's kernels for this model's shapes (utils/codegen_{b.flavor}.py, "
                     f"then rebuild), or write the model with the build's {b.where}")
            if theirs is None:
                raise BridgeError(f"{model}: {t.name} is M={m} x K={k}, a shape the {b.flavor.upper()} kernels of "
                                  f"{ref.root} were not generated for ({b.where} lists "
                                  f"{', '.join(f'{x.m}x{x.k}' for x in b.config.tiles)}); bitnet.cpp would leave it "
                                  f"uncomputed: {regen}")
            if (mine.BM, mine.BK, mine.bm) != (theirs.BM, theirs.BK, theirs.bm):
                raise BridgeError(f"{model}: {t.name} (M={m}, K={k}) is tiled BM={mine.BM}, BK={mine.BK}, "
                                  f"bm={mine.bm}; the kernels of {ref.root} read BM={theirs.BM}, BK={theirs.BK}, "
                                  f"bm={theirs.bm} ({b.where}): {regen}")


@contextlib.contextmanager
def build_kernel_config(cpp_dir: str | os.PathLike[str], model: str | os.PathLike[str]) -> Iterator[str | None]:
    """While comparing against a TL build, let a TL file without the harness's metadata key
    (one bitnet.cpp's converter made) find its tiles in the build's include/kernel_config.ini,
    the config that build's kernels and a converter run in that checkout share: sets
    $BITNET_KERNEL_CONFIG for the duration unless the user set it. Yields the path used, or None."""
    from bitnet.gguf.reader import GGUFReader
    from bitnet.quant.tl_config import ENV_KERNEL_CONFIG, KEY_KERNEL_CONFIG

    path = None
    if ENV_KERNEL_CONFIG not in os.environ:
        try:
            with GGUFReader(model) as r:
                needs = any(t.type_name in TL_TYPES for t in r.tensors) and r.get(KEY_KERNEL_CONFIG) is None
            if needs:
                from crossval.reference import locate

                b = tl_build(locate(cpp_dir))
                path = b.where if b is not None and b.config is not None else None
        except Exception:  # unreadable model or build: the comparison itself reports it
            path = None
    if path is None:
        yield None
        return
    os.environ[ENV_KERNEL_CONFIG] = path
    try:
        yield path
    finally:
        os.environ.pop(ENV_KERNEL_CONFIG, None)
