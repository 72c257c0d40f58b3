"""Differential fuzzing of `bitnet.tokenizer` against libllama, vocabulary by vocabulary.

Usage:
    python bench/fuzz_tokenizer.py --cpp-dir DIR [--vocab-dir D] [--n 500] [NAME ...]

DIR is a llama.cpp build (the crossval one: `python -m crossval.setup`; needs include/llama.h,
ggml/include and build/bin/libllama.so). A small C helper (below, compiled with `cc` into a
temporary folder) loads each `ggml-vocab-NAME.gguf` with `vocab_only = true` and exposes
`llama_tokenize`, `llama_detokenize`, the special ids, the add_bos/add_eos flags and
`llama_vocab_is_eog`. For every vocabulary it compares those facts and, for N random strings
(ASCII, every Unicode plane, non-ASCII whitespace, contractions, digit runs, special-token
texts), the ids for (add_special, parse_special) in (F,F), (T,T), (T,F) and the detokenized bytes
for three flag pairs. Prints the first mismatches and a count per vocabulary; exit 1 on any.
This is how the rules in docs/reference/tokenizers.md were found; not a test (it needs a build).
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import random
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

HELPER_C = r"""
#include "llama.h"
static void quiet(enum ggml_log_level l, const char *t, void *u) { (void) l; (void) t; (void) u; }
void *fz_load(const char *path) {
    llama_log_set(quiet, 0);
    llama_backend_init();
    struct llama_model_params p = llama_model_default_params();
    p.vocab_only = 1;
    return llama_model_load_from_file(path, p);
}
static const struct llama_vocab *V(void *m) { return llama_model_get_vocab((struct llama_model *) m); }
int fz_tokenize(void *m, const char *s, int n, int *out, int max, int add, int parse) {
    return llama_tokenize(V(m), s, n, out, max, add, parse);
}
int fz_detok(void *m, const int *ids, int n, char *out, int max, int rm, int unparse) {
    return llama_detokenize(V(m), ids, n, out, max, rm, unparse);
}
int fz_fact(void *m, int which) {
    switch (which) {
        case 0: return llama_vocab_bos(V(m));
        case 1: return llama_vocab_eos(V(m));
        case 2: return llama_vocab_eot(V(m));
        case 3: return llama_vocab_n_tokens(V(m));
        case 4: return llama_vocab_get_add_bos(V(m));
        case 5: return llama_vocab_get_add_eos(V(m));
    }
    return -99;
}
int fz_is_eog(void *m, int id) { return llama_vocab_is_eog(V(m), id); }
"""

SPECIAL = ["<|eot_id|>", "<|begin_of_text|>", "<|end_of_text|>", "<s>", "</s>", "<unk>", "<|endoftext|>",
           "<|im_end|>", "<|im_start|>", "<|end|>", "<|assistant|>", "<|user|>", "<pad>", "<|fim_prefix|>",
           "<\uff5cend\u2581of\u2581sentence\uff5c>", "<EOT>", "[PAD]"]
WHITESPACE = "\u3001\u3002\uff01\uff5e\u2018\u201f\u4e00\uac00 \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000\u2028\u2029\u202f\u205f\u3000\u200b\ufeff\u180e"
SNIPPETS = ["'s", "'S", "'ll", "'LL", "'Re", "'ve", "'d", "'t", "'m", "  ", "\r\n", "...", "0123", "١٢٣", "²", "½", "Ⅻ",
            " ' ", " 's", " ?", "   \n", "1234567"]


def build_helper(cpp_dir: Path, tmp: Path) -> ctypes.CDLL:
    root = next((r for r in (cpp_dir, cpp_dir / "llama.cpp", cpp_dir / "3rdparty" / "llama.cpp")
                 if (r / "include" / "llama.h").is_file()), None)
    if root is None:
        raise SystemExit(f"{cpp_dir}: no include/llama.h")
    libs = sorted(root.glob("build/**/libllama.so"))
    if not libs:
        raise SystemExit(f"{root}/build: no libllama.so")
    src, so = tmp / "fz.c", tmp / "libfz.so"
    src.write_text(HELPER_C)
    subprocess.run(["cc", "-O2", "-shared", "-fPIC", str(src), f"-I{root / 'include'}", f"-I{root / 'ggml' / 'include'}",
                    f"-L{libs[0].parent}", "-lllama", f"-Wl,-rpath,{libs[0].parent}", "-o", str(so)], check=True)
    lib = ctypes.CDLL(str(so))
    lib.fz_load.restype = ctypes.c_void_p
    lib.fz_load.argtypes = [ctypes.c_char_p]
    c_int, c_void_p = ctypes.c_int, ctypes.c_void_p
    lib.fz_tokenize.argtypes = [c_void_p, ctypes.c_char_p, c_int, ctypes.POINTER(c_int), c_int, c_int, c_int]
    lib.fz_detok.argtypes = [c_void_p, ctypes.POINTER(c_int), c_int, ctypes.c_char_p, c_int, c_int, c_int]
    lib.fz_fact.argtypes = [c_void_p, c_int]
    lib.fz_is_eog.argtypes = [c_void_p, c_int]
    return lib


class Reference:
    def __init__(self, lib: ctypes.CDLL, path: Path):
        self.lib, self.m = lib, lib.fz_load(str(path).encode())
        if not self.m:
            raise RuntimeError(f"libllama could not load {path}")

    def tokenize(self, text: str, add: bool, parse: bool) -> list[int]:
        raw = text.encode("utf-8")
        n = 4 * len(raw) + 16
        buf = (ctypes.c_int * n)()
        k = self.lib.fz_tokenize(self.m, raw, len(raw), buf, n, int(add), int(parse))
        assert k >= 0, k
        return list(buf[:k])

    def detokenize(self, ids: list[int], rm: bool, unparse: bool) -> bytes:
        arr = (ctypes.c_int * max(len(ids), 1))(*ids)
        n = 64 * len(ids) + 64
        out = ctypes.create_string_buffer(n)
        k = self.lib.fz_detok(self.m, arr, len(ids), out, n, int(rm), int(unparse))
        assert k >= 0, k
        return out.raw[:k]

    def fact(self, which: int) -> int:
        return self.lib.fz_fact(self.m, which)


def random_item(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.3:
        return chr(rng.randint(0x20, 0x7E))
    if r < 0.4:
        return rng.choice(WHITESPACE)
    if r < 0.5:
        return rng.choice(SNIPPETS)
    if r < 0.55:
        return rng.choice(SPECIAL) + rng.choice(["", " ", "  ", "\n"])
    lo, hi = rng.choice([(0x80, 0x2FFF), (0x3000, 0xD7FF), (0xE000, 0xFFFF), (0x10000, 0x2FFFF),
                         (0x1F300, 0x1FAFF), (0xE0000, 0xE01FF), (0x30000, 0x3134F), (0, 0x10FFFF)])
    c = rng.randint(lo, hi)
    return "x" if 0xD800 <= c < 0xE000 else chr(c)


def fuzz(name: str, path: Path, lib: ctypes.CDLL, n: int, show: int = 3) -> int:
    from bitnet.tokenizer import load_tokenizer

    ref, tok = Reference(lib, path), load_tokenizer(path)
    v = tok.vocab
    bad = 0
    facts = [ref.fact(i) for i in range(6)]
    ours = [v.bos_id, v.eos_id, v.eot_id, tok.real_vocab_size, int(v.add_bos), int(v.add_eos)]
    if facts != [-1 if x is None else x for x in ours]:
        print(f"{name}: facts differ: libllama {facts}, ours {ours}")
        bad += 1
    eog = {i for i in range(tok.real_vocab_size) if ref.lib.fz_is_eog(ref.m, i)}
    if eog != set(v.eog_ids):
        print(f"{name}: EOG sets differ: libllama {sorted(eog)[:10]}, ours {sorted(v.eog_ids)[:10]}")
        bad += 1
    rng = random.Random(name)
    for _ in range(n):
        s = "".join(random_item(rng) for _ in range(rng.randint(1, 25)))
        for add, parse in ((False, False), (True, True), (True, False)):
            a, b = tok.encode(s, add_special=add, parse_special=parse), ref.tokenize(s, add, parse)
            if a != b:
                bad += 1
                if bad <= show:
                    print(f"{name}: encode({s!r}, add_special={add}, parse_special={parse})\n  ours {a}\n  ref  {b}")
                break
            for rm, unparse in ((False, False), (True, True), (False, True)):
                da, db = tok.detokenize(b, rm, unparse), ref.detokenize(b, rm, unparse)
                if da != db:
                    bad += 1
                    if bad <= show:
                        print(f"{name}: detokenize({b}, {rm}, {unparse})\n  ours {da!r}\n  ref  {db!r}")
                    break
    print(f"{name}: {bad} mismatching strings of {n}", flush=True)
    return bad


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cpp-dir", required=True)
    ap.add_argument("--vocab-dir", help="folder of ggml-vocab-*.gguf (default: where the tests look)")
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("names", nargs="*", help="vocabularies (default: every supported one found)")
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    from tests._vocab import SUPPORTED, vocab_files

    found = ({p.name[len("ggml-vocab-"):-len(".gguf")]: p for p in Path(args.vocab_dir).glob("ggml-vocab-*.gguf")}
             if args.vocab_dir else vocab_files())
    names = args.names or [n for n in SUPPORTED if n in found]
    with tempfile.TemporaryDirectory() as tmp:
        lib = build_helper(Path(args.cpp_dir), Path(tmp))
        total = sum(fuzz(name, found[name], lib, args.n) for name in names)
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
