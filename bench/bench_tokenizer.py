"""Encode throughput of our LLaMA-3 BPE tokenizer on a few MB of mixed text (English-like prose,
code, CJK, emoji, numbers), beside llama.cpp's `llama_tokenize` on the same text.

Usage:
    python bench/bench_tokenizer.py [--mb 2] [--vocab ggml-vocab-llama-bpe.gguf]
                                    [--cpp-dir DIR] [--llama-cpp-python] [--profile]

The text is generated deterministically from a seed (no downloads) and is varied on purpose:
words are random syllable strings, numbers random, CJK random characters, so the per-piece
cache cannot turn the run into dictionary lookups of a handful of repeated words (both a cold
pass, empty cache, and a warm second pass are reported). Both tokenizers encode the text in
4 KB pieces and the ids are compared.

The llama.cpp side, either of:
- `--cpp-dir DIR`: a llama.cpp/bitnet.cpp build (as crossval uses; `python -m crossval.setup`
  makes one), called through the crossval shim (`bh_tokenize` -> `llama_tokenize`) in-process;
- `--llama-cpp-python`: `llama_cpp.Llama(model_path=vocab, vocab_only=True).tokenize`, if that
  package is importable.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gguf import cpu_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SYLLABLES = ["ka", "to", "ri", "mo", "en", "the", "ing", "str", "qu", "ph", "al", "or", "ex", "un", "de",
             "ver", "tion", "ly", "sch", "ght", "ou", "ai", "z", "y", "ck"]
CODE_WORDS = ["def", "return", "for", "in", "if", "else", "self", "x", "i", "np.array", "print", "None",
              "class", "import", "lambda", "yield", "{", "}", "(", ")", "[", "]", ":", "=", "+=", "==", "->"]
EMOJI = ["🦙", "🚀", "✨", "😀", "👍🏽", "🇯🇵", "❤️", "🤖", "🧪", "📈"]


def mixed_text(n_bytes: int, seed: int = 0) -> str:
    """~n_bytes of UTF-8: 55% prose, 25% code, 12% CJK/Hangul, 8% emoji and punctuation."""
    rng = random.Random(seed)
    parts: list[str] = []
    size = 0

    def word() -> str:
        w = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 4)))
        return w.capitalize() if rng.random() < 0.1 else w

    while size < n_bytes:
        r = rng.random()
        if r < 0.55:
            s = " ".join(word() if rng.random() > 0.08 else str(rng.randint(0, 99999)) for _ in range(rng.randint(5, 18)))
            s += rng.choice([". ", ", ", "! ", "? ", "; ", ".\n", "'s ", " -- "])
        elif r < 0.80:
            indent = "    " * rng.randint(0, 3)
            s = indent + " ".join(rng.choice(CODE_WORDS) if rng.random() < 0.6 else word() for _ in range(rng.randint(3, 10))) + "\n"
        elif r < 0.92:
            lo, hi = rng.choice([(0x4E00, 0x9FFF), (0x3040, 0x30FF), (0xAC00, 0xD7A3)])
            s = "".join(chr(rng.randint(lo, hi)) for _ in range(rng.randint(4, 20))) + rng.choice(["。", "、", "！", " "])
        else:
            s = " ".join(rng.choice(EMOJI) + rng.choice(["", "!", " café", " naïve", " “quoted”", " 3.14"]) for _ in range(rng.randint(1, 5))) + " "
        parts.append(s)
        size += len(s.encode("utf-8"))
    return "".join(parts)


def chunks(text: str, size: int = 4096) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)]


def find_vocab(arg: str | None, cpp_dir: str | None) -> Path:
    cands = [Path(arg)] if arg else []
    cands += [REPO.parent / "shared" / "vocab" / "ggml-vocab-llama-bpe.gguf"]
    if cpp_dir:
        cands.append(Path(cpp_dir) / "vocab" / "ggml-vocab-llama-bpe.gguf")
    for c in cands:
        if c.is_file():
            return c
    raise SystemExit("need ggml-vocab-llama-bpe.gguf (--vocab)")


def reference_shim(cpp_dir: str, vocab: Path):
    """A callable text -> ids through libllama (the crossval shim loads a model: a tiny
    synthetic one carrying this vocab)."""
    import numpy as np

    from bitnet.synth import synthesize
    from crossval.reference import locate, shim_for

    model = REPO / "bench" / "out" / "tokenizer-bench-llama3.gguf"
    if not model.exists():
        model.parent.mkdir(parents=True, exist_ok=True)
        synthesize(model, preset="tiny", arch="bitnet", fmt="f16", vocab_gguf=vocab)
    mod = shim_for(locate(cpp_dir))
    ffi, lib = mod.ffi, mod.lib
    h = lib.bh_load(str(model).encode(), 64, 1, 0)
    if h == ffi.NULL:
        raise SystemExit(f"libllama could not load {model}")
    buf = np.zeros(1 << 16, np.int32)
    pb = ffi.cast("int *", buf.ctypes.data)

    def tokenize(raw: bytes) -> list[int]:
        n = lib.bh_tokenize(h, raw, len(raw), pb, buf.size, False, False)
        return buf[:n].tolist()

    return tokenize, "llama_tokenize via the crossval shim"


def reference_llama_cpp_python(vocab: Path):
    from llama_cpp import Llama

    llm = Llama(model_path=str(vocab), vocab_only=True, verbose=False)

    def tokenize(raw: bytes) -> list[int]:
        return llm.tokenize(raw, add_bos=False, special=False)

    return tokenize, "llama_cpp.Llama(vocab_only=True).tokenize"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=2.0)
    ap.add_argument("--vocab", default=None, help="ggml-vocab-llama-bpe.gguf (default: ../shared/vocab)")
    ap.add_argument("--cpp-dir")
    ap.add_argument("--llama-cpp-python", action="store_true")
    ap.add_argument("--profile", action="store_true", help="print where the cold pass spends its time")
    args = ap.parse_args()
    vocab = find_vocab(args.vocab, args.cpp_dir)
    from bitnet.tokenizer import load_tokenizer

    text = mixed_text(int(args.mb * 1e6))
    n_bytes = len(text.encode("utf-8"))
    parts = chunks(text)
    t0 = time.perf_counter()
    tok = load_tokenizer(vocab)
    load_s = time.perf_counter() - t0
    prof = cProfile.Profile() if args.profile else None
    t0 = time.perf_counter()
    if prof:
        prof.enable()
    ours = [tok.encode(p, add_special=False) for p in parts]
    if prof:
        prof.disable()
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    for p in parts:
        tok.encode(p, add_special=False)
    warm = time.perf_counter() - t0
    res = {"machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": sys.version.split()[0]},
           "text_bytes": n_bytes, "tokens": sum(map(len, ours)), "load_s": round(load_s, 3),
           "ours_cold_KB_s": round(n_bytes / cold / 1e3, 1), "ours_warm_KB_s": round(n_bytes / warm / 1e3, 1),
           "distinct_pieces": len(getattr(getattr(tok, "_bpe", None), "cache", ()))}
    ref = None
    if args.cpp_dir:
        ref = reference_shim(args.cpp_dir, vocab)
    elif args.llama_cpp_python:
        ref = reference_llama_cpp_python(vocab)
    if ref:
        tokenize, how = ref
        raws = [p.encode("utf-8") for p in parts]
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            theirs = [tokenize(r) for r in raws]
            best = min(best, time.perf_counter() - t0)
        res["reference"] = how
        res["llama_cpp_KB_s"] = round(n_bytes / best / 1e3, 1)
        res["llama_cpp_over_ours_cold"] = round(cold / best, 2)
        res["llama_cpp_over_ours_warm"] = round(warm / best, 2)
        res["identical_ids"] = ours == theirs
    print(json.dumps(res, indent=2, ensure_ascii=False))
    if prof:
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(8)
        print(s.getvalue())


if __name__ == "__main__":
    main()
