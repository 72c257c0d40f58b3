"""Find a C++ reference (a llama.cpp or bitnet.cpp checkout with a build, or the cache folder of
`python -m crossval.setup`) and build the shim against its own llama.h."""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from bitnet.errors import BridgeError

CDEF = """
int bh_api(void);
void *bh_load(const char *path, int n_ctx, int n_threads, int verbose);
int bh_n_vocab(void *h);
int bh_tokenize(void *h, const char *text, int len, int *out, int max, int add_special, int parse_special);
int bh_eval(void *h, const int *ids, int n, float *out);
int bh_greedy(void *h, const int *ids, int n, int n_gen, int *out);
int bh_decode_steps(void *h, const int *ids, int n, int n_steps, int *greedy, float *out);
int bh_eval_layers(void *h, const int *ids, int n, int n_layer, int n_embd, float *logits_out, float *layers_out);
void bh_free(void *h);
"""
SHIM_SOURCE = Path(__file__).with_name("shim.c")


@dataclass(frozen=True)
class Reference:
    root: Path  # what the user passed
    source: Path  # the llama.cpp tree (include/llama.h, ggml/include)
    libllama: Path
    api: str  # "upstream" or "bitnet.cpp-fork"
    version: str  # llama-cpp-python version, git commit, or "unknown"


def _candidates(root: Path) -> list[Path]:
    # the setup cache keeps the tree in root/llama.cpp; bitnet.cpp keeps it in 3rdparty/llama.cpp
    return [root, root / "llama.cpp", root / "3rdparty" / "llama.cpp"]


def locate(root: str | os.PathLike[str]) -> Reference:
    r = Path(root).expanduser()
    looked: list[str] = []
    if not r.is_dir():
        raise BridgeError(f"--bitnet-cpp-dir {r}: not a folder")
    for src in _candidates(r):
        header = src / "include" / "llama.h"
        looked.append(str(header))
        if not header.is_file():
            continue
        libs = []
        for b in (r / "build", src / "build"):
            for name in ("libllama.so", "libllama.dylib"):
                libs += [p for p in b.rglob(name)] if b.is_dir() else []
        looked.append(f"{r / 'build'}/**/libllama.so, {src / 'build'}/**/libllama.so")
        if not libs:
            continue
        text = header.read_text(errors="replace")
        api = "upstream" if "llama_model_load_from_file" in text else "bitnet.cpp-fork"
        lib = libs[0]
        _check_symbols(lib, api)
        return Reference(r, src, lib, api, _version(r, src))
    raise BridgeError(f"--bitnet-cpp-dir {r}: no llama.cpp build found; looked for: {'; '.join(looked)}. "
                      "Build one with `python -m crossval.setup` (prints the folder to pass).")


def _check_symbols(lib: Path, api: str) -> None:
    try:
        dll = ctypes.CDLL(str(lib))
    except OSError as e:
        raise BridgeError(f"{lib} does not load: {e}") from None
    needed = ["llama_model_load_from_file", "llama_init_from_model", "llama_model_get_vocab"] if api == "upstream" \
        else ["llama_load_model_from_file", "llama_new_context_with_model", "llama_n_vocab"]
    missing = [s for s in needed + ["llama_decode", "llama_get_logits_ith", "llama_tokenize"] if not hasattr(dll, s)]
    if missing:
        raise BridgeError(f"{lib} lacks {missing} (header says {api} API): header and library do not match")


def _version(root: Path, src: Path) -> str:
    import json

    stamp = root / "bitnet-reference.json"
    if stamp.is_file():
        return "llama-cpp-python " + json.loads(stamp.read_text()).get("llama_cpp_python", "?")
    head = src / ".git" / "HEAD"
    if head.is_file():
        return "git " + head.read_text().strip()
    return "unknown"


@cache
def shim_for(ref: Reference):
    """The compiled shim module for this reference (built once, cached on disk by bitnet.toolchain.ffi)."""
    from bitnet.toolchain.ffi import build_shim

    defines = ["-DBH_OLD_API"] if ref.api == "bitnet.cpp-fork" else []
    return build_shim(
        "bitnet_crossval_shim",
        SHIM_SOURCE.read_text(),
        CDEF,
        system_include_dirs=[ref.source / "include", ref.source / "ggml" / "include"],
        library_dirs=[ref.libllama.parent],
        libraries=["llama"],
        extra_compile_args=["-O2", *defines],
    )
