"""Find a C++ reference (a llama.cpp or bitnet.cpp checkout with a build, or the cache folder of
`python -m crossval.setup`) and build the shim against its own llama.h."""

from __future__ import annotations

import ctypes
import os
import re
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
int bh_eval_stepwise(void *h, const int *ids, int n, int n_steps, int *greedy, float *out, float *steps_out);
int bh_eval_layers(void *h, const int *ids, int n, int n_layer, int n_embd, float *logits_out, float *layers_out);
int bh_decode_steps_layers(void *h, const int *ids, int n, int n_steps, int n_layer, int n_embd, int *greedy,
                           float *out, float *layers_out);
void *bh_trace(void *h, const int *ids, int n, int decode_last, const char *names, float *logits_out);
int bh_trace_status(void *t);
int bh_trace_count(void *t);
int bh_trace_unsupported(void *t);
int bh_trace_record(void *t, int i, char *name, char *op, long long *ne, long long *offset);
long long bh_trace_size(void *t);
void bh_trace_copy(void *t, float *out);
void bh_trace_free(void *t);
void bh_free(void *h);
void *bh_ctx_new(void *h, int n_ctx);
int bh_ctx_step(void *h, void *ctx, const int *ids, int n, int pos0, int *best);
void bh_ctx_free(void *ctx);
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


def locate(root: str | os.PathLike[str], option: str = "--bitnet-cpp-dir") -> Reference:
    """The build under `root`; `option` is how the caller spells the folder's option
    (`--bitnet-cpp-dir` for pytest, `--cpp-dir` for `bitnet crossval`) so errors name it."""
    r = Path(root).expanduser()
    looked: list[str] = []
    if not r.is_dir():
        raise BridgeError(f"{option} {r}: not a folder. Build the reference with `python -m crossval.setup` "
                          "(it prints the folder to pass)")
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
    raise BridgeError(f"{option} {r}: no llama.cpp build found; looked for: {'; '.join(looked)}. "
                      "Build one with `python -m crossval.setup` (prints the folder to pass).")


_ARCH_ENTRY = re.compile(r'\{\s*LLM_ARCH_\w+\s*,\s*"([^"]+)"\s*\}')


def known_archs(ref: Reference) -> list[str]:
    """The `general.architecture` names this build's llama.cpp source registers (its
    LLM_ARCH_NAMES table: src/llama-arch.cpp upstream, src/llama.cpp in older trees and the
    bitnet.cpp fork). Empty when the source is not there to read."""
    names: list[str] = []
    for f in (ref.source / "src" / "llama-arch.cpp", ref.source / "src" / "llama.cpp", ref.source / "llama.cpp"):
        if f.is_file():
            names += [n for n in _ARCH_ENTRY.findall(f.read_text(errors="replace")) if n not in names]
    return names


def load_failure_hint(ref: Reference, model: str | os.PathLike[str]) -> str:
    """Why a model may not load here, from facts: the model's arch and the archs this library
    registers. The case users hit: upstream llama.cpp has `bitnet` but not `bitnet-b1.58` (the
    arch of Microsoft's BitNet-b1.58-2B-4T GGUF and of `bitnet synth`'s default), which
    bitnet.cpp's llama.cpp fork registers from 40ed0f29 (../shared/spec/MODEL.md; the older
    406a5036 that docs/explanation/performance.md measured loads only `bitnet`)."""
    try:
        from bitnet.gguf import GGUFReader

        with GGUFReader(model) as r:
            arch = r.architecture
    except Exception as e:  # the reader's own error says what is wrong with the file
        return f"our reader cannot read it either: {e}"
    archs = known_archs(ref)
    bitnet = [a for a in archs if "bitnet" in a]
    if not archs:
        return f"model arch {arch!r}"
    if arch in archs:
        return f"model arch {arch!r} is one this library registers; see the worker's stderr"
    hint = (f"model arch {arch!r} is not one this library ({ref.api} API) registers; its BitNet archs: "
            f"{', '.join(bitnet) or 'none'}")
    if arch == "bitnet-b1.58":
        hint += ("; upstream llama.cpp cannot load bitnet-b1.58; bitnet.cpp's llama.cpp fork at 40ed0f29 "
                 "(merge-dev) registers it (older forks such as 406a5036 only 'bitnet'): pass that checkout, "
                 "or make a model this library loads with `bitnet synth --arch bitnet`")
    return hint


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
