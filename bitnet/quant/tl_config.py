"""bitnet.cpp kernel configs (`include/kernel_config.ini`) as data, and where a TL file finds one.

TL1/TL2 tensors are tile-permuted by per-shape parameters that bitnet.cpp's codegen scripts
(`utils/codegen_tl1.py`, `utils/codegen_tl2.py`, microsoft/BitNet 16da220) write to
`include/kernel_config.ini`; the converter reads that file (relative to its working directory)
and the GGUF does not carry it, so a TL tensor decodes only with its config.

The ini has one section per (M, K) weight shape (`[Kernels_N]`). The codegen writes the keys
`M`, `K`, `BM`, `BK`, `bmm`; ConfigParser lower-cases them, so the file reads `m`, `k`, `bm`,
`bk`, `bmm` -- and **`bm` there is the big row tile BM, `bmm` the small one bm** (the converter:
`BM = config.get(kernel, 'bm')`, `bm = config.get(kernel, 'bmm')`). The file does not say
whether it is a TL1 or a TL2 config; the tensor's type does. The converter takes the FIRST
section whose (m, k) matches; so does `KernelConfig.find`.

Where the harness looks, in order (`tile_for`):
1. the GGUF metadata key `bitnet_harness.tl_kernel_config` (a string: the ini text), which the
   harness writes into every TL file it produces;
2. `$BITNET_KERNEL_CONFIG`: a kernel_config.ini file, or a bitnet.cpp checkout directory
   (its `include/kernel_config.ini`);
3. `$BITNET_CPP_DIR` (the C++ reference dir, `bitnet.settings`): when it is a bitnet.cpp
   checkout, its `include/kernel_config.ini`.
Both variables are parsed by `bitnet.settings`, like every `BITNET_*` variable.
It never reads the current directory implicitly (the converter does; a harness must not pick up
a stray file).
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bitnet.errors import FormatError

#: GGUF metadata key holding the kernel_config.ini text of a TL file the harness wrote
KEY_KERNEL_CONFIG = "bitnet_harness.tl_kernel_config"
#: a kernel_config.ini path or a bitnet.cpp checkout directory
ENV_KERNEL_CONFIG = "BITNET_KERNEL_CONFIG"
#: a bitnet.cpp checkout directory
ENV_CPP_DIR = "BITNET_CPP_DIR"
INI_IN_CHECKOUT = Path("include") / "kernel_config.ini"


class KernelConfigError(FormatError):
    """A kernel config is missing, malformed, or has no entry for a TL tensor's shape."""


@dataclass(frozen=True)
class TileConfig:
    """One `[Kernels_N]` section: the tiling of an (M rows, K columns) weight."""

    m: int  # rows (output features)
    k: int  # columns (input features; ggml ne0)
    BM: int  # row tile (ini key `bm`)
    BK: int  # column tile (ini key `bk`)
    bm: int  # SIMD row block (ini key `bmm`)

    def check(self, flavor: str) -> None:
        """The constraints the codegen asserts and the converter's reshapes need."""
        m, k, BM, BK, bm = self.m, self.k, self.BM, self.BK, self.bm
        why = []
        if min(m, k, BM, BK, bm) <= 0:
            why.append("every value must be positive")
        elif flavor == "tl1":
            by = 256 // bm
            if bm not in (32, 64):
                why.append(f"bm (bmm) = {bm}, codegen_tl1 allows 32 or 64")
            if m % BM or BM % bm:
                why.append(f"M % BM and BM % bm must be 0 (M={m}, BM={BM}, bm={bm})")
            if k % BK or BK % by:
                why.append(f"K % BK and BK % (256/bm = {by}) must be 0 (K={k}, BK={BK})")
        elif flavor == "tl2":
            if bm != 32:
                why.append(f"bm (bmm) = {bm}, codegen_tl2 allows 32 only")
            if m % BM or BM % bm:
                why.append(f"M % BM and BM % bm must be 0 (M={m}, BM={BM}, bm={bm})")
            if BK % 24:
                why.append(f"BK = {BK} is not a multiple of 24 (3 weights x 8 sign bits)")
            if (k % BK) % 32:
                why.append(f"(K % BK) % 32 must be 0 (K={k}, BK={BK})")
            if k % BK > 256 or k < 256:
                why.append(f"K >= 256 and K % BK <= 256 (ggml's TL2 size rule; K={k}, BK={BK})")
            if k < BK:
                why.append(f"K ({k}) < BK ({BK}): no three-weight part")
        else:
            why.append(f"unknown TL flavor {flavor!r}")
        if why:
            raise KernelConfigError(f"{flavor.upper()} kernel config for M={m}, K={k} "
                                    f"(BM={BM}, BK={BK}, bm={bm}) is unusable: {'; '.join(why)}")


@dataclass(frozen=True)
class KernelConfig:
    """A parsed kernel_config.ini and where it came from."""

    tiles: tuple[TileConfig, ...]
    source: str

    def find(self, m: int, k: int) -> TileConfig | None:
        """The first section for (M, K), as the converter picks it."""
        return next((t for t in self.tiles if t.m == m and t.k == k), None)

    def to_ini(self) -> str:
        """The ini text as codegen_tl*.py writes it (ConfigParser.write of lower-cased keys)."""
        return "".join(f"[Kernels_{i}]\nm = {t.m}\nk = {t.k}\nbm = {t.BM}\nbk = {t.BK}\nbmm = {t.bm}\n\n"
                       for i, t in enumerate(self.tiles))


def parse_ini(text: str, source: str) -> KernelConfig:
    """Parse kernel_config.ini text; a malformed file is a KernelConfigError naming the section."""
    cp = configparser.ConfigParser()
    try:
        cp.read_string(text, source=source)
    except configparser.Error as e:
        raise KernelConfigError(f"{source}: not a kernel_config.ini: {e}") from None
    tiles = []
    for sec in cp.sections():
        vals: dict[str, int] = {}
        for key in ("m", "k", "bm", "bk", "bmm"):
            raw = cp.get(sec, key, fallback=None)
            if raw is None:
                raise KernelConfigError(f"{source}: [{sec}] has no `{key}` (expected m, k, bm, bk, bmm)")
            try:
                vals[key] = int(raw)
            except ValueError:
                raise KernelConfigError(f"{source}: [{sec}] {key} = {raw!r} is not an integer") from None
        tiles.append(TileConfig(vals["m"], vals["k"], vals["bm"], vals["bk"], vals["bmm"]))
    if not tiles:
        raise KernelConfigError(f"{source}: no [Kernels_N] sections")
    return KernelConfig(tuple(tiles), source)


def load_ini(path: str | os.PathLike[str]) -> KernelConfig:
    """A kernel_config.ini file, or a bitnet.cpp checkout directory holding include/kernel_config.ini."""
    p = Path(path)
    if p.is_dir():
        p = p / INI_IN_CHECKOUT
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise KernelConfigError(f"{p}: cannot read the kernel config: {e.strerror or e}") from None
    return parse_ini(text, str(p))


def _where(reader: Any, env: Mapping[str, str] | None) -> list[tuple[str, KernelConfig | None]]:
    """Every place looked at, in order, with its config or None (absent)."""
    from bitnet.settings import settings

    s = settings(env)
    out: list[tuple[str, KernelConfig | None]] = []
    text = reader.get(KEY_KERNEL_CONFIG) if reader is not None else None
    out.append((f"metadata key {KEY_KERNEL_CONFIG}" + ("" if text is not None else " (absent)"),
                parse_ini(str(text), f"{getattr(reader, 'path', '?')}: {KEY_KERNEL_CONFIG}") if text is not None else None))
    for var, p in ((ENV_KERNEL_CONFIG, s.kernel_config), (ENV_CPP_DIR, s.cpp_dir)):
        if p is None:
            out.append((f"${var} (unset)", None))
            continue
        ini = p if var == ENV_KERNEL_CONFIG and not p.is_dir() else p / INI_IN_CHECKOUT
        if not ini.is_file():
            out.append((f"${var} -> {ini} (no such file)", None))
            continue
        out.append((f"${var} -> {ini}", load_ini(ini)))
    return out


def tile_for(reader: Any, name: str, m: int, k: int, flavor: str,
             env: Mapping[str, str] | None = None) -> TileConfig:
    """The checked tile config of a TL tensor of M rows and K columns, from the first place that
    has an entry for (M, K); otherwise a KernelConfigError naming the shape and every place."""
    places = _where(reader, env)
    looked = []
    for where, cfg in places:
        tile = cfg.find(m, k) if cfg is not None else None
        if tile is not None:
            tile.check(flavor)
            return tile
        looked.append(where if cfg is None else f"{where} (sections for {_shapes(cfg)})")
    raise KernelConfigError(
        f"{getattr(reader, 'path', '?')}: {name} is {flavor.upper()} with M={m} rows, K={k} columns "
        f"(ggml shape [{k}, {m}]); its tiles are permuted by a per-shape kernel config "
        f"(bitnet.cpp include/kernel_config.ini) and none has an entry for M={m}, K={k}. "
        f"Looked in: {'; '.join(looked)}. Point ${ENV_KERNEL_CONFIG} at the kernel_config.ini "
        "(or the bitnet.cpp checkout) the file was converted with.")


def _shapes(cfg: KernelConfig) -> str:
    return ", ".join(f"{t.m}x{t.k}" for t in cfg.tiles)
