"""Encode throughput of our LLaMA-3 BPE tokenizer on a few MB of mixed text (English prose,
code, CJK, emoji), beside llama.cpp's `llama_tokenize` on the same text when a reference build
is given.

Usage: python bench/bench_tokenizer.py [--cpp-dir DIR] [--mb 2]
The text is generated deterministically (no downloads). Both tokenizers encode the text in
4 KB pieces, and the outputs are compared.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gguf import cpu_model  # noqa: E402

PROSE = ("The model reads a prompt and predicts the next token. Every claim about an engine "
         "should come from a measurement, on a named machine, with the code that made it. ")
CODE = ("def forward(x, layers):\n    for i, layer in enumerate(layers):\n        x = x + layer(x)  # residual\n"
        "    return {'logits': x, \"n\": 42}\n")
CJK = "大型语言模型的权重只有三个值。東京は日本の首都です。한국어 문장도 있습니다。"
EMOJI = "🦙🚀✨ café naïve – “quotes” 12345 3.14159 "


def mixed_text(n_bytes: int) -> str:
    rng = np.random.default_rng(0)
    parts, size = [], 0
    pieces = [PROSE, CODE, CJK, EMOJI]
    while size < n_bytes:
        p = pieces[int(rng.integers(0, 4))]
        parts.append(p)
        size += len(p.encode("utf-8"))
    return "".join(parts)


def chunks(text: str, size: int = 4096) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cpp-dir")
    ap.add_argument("--mb", type=float, default=2.0)
    ap.add_argument("--vocab", default=None, help="ggml-vocab-llama-bpe.gguf (default: ../shared/vocab or the reference's)")
    args = ap.parse_args()
    vocab = Path(args.vocab) if args.vocab else None
    for cand in (Path("../shared/vocab/ggml-vocab-llama-bpe.gguf"),
                 Path(args.cpp_dir or "/nonexistent") / "vocab" / "ggml-vocab-llama-bpe.gguf"):
        if vocab is None and cand.is_file():
            vocab = cand
    if vocab is None:
        raise SystemExit("need ggml-vocab-llama-bpe.gguf (--vocab)")
    from bitnet.tokenizer import load_tokenizer

    text = mixed_text(int(args.mb * 1e6))
    n_bytes = len(text.encode("utf-8"))
    parts = chunks(text)
    tok = load_tokenizer(vocab)
    t0 = time.perf_counter()
    ours = [tok.encode(p, add_special=False) for p in parts]
    dt = time.perf_counter() - t0
    res = {"machine": {"cpu": cpu_model(), "cores": os.cpu_count()}, "text_bytes": n_bytes,
           "ours_KB_s": n_bytes / dt / 1e3, "ours_tokens": sum(map(len, ours))}
    # what dominates: time the pre-tokenizer split alone (cache is warm now, so re-encode = split + lookups)
    from bitnet.tokenizer.pretokenize import split

    t0 = time.perf_counter()
    for p in parts:
        split(p, tok.pre_family)
    res["pretokenize_share"] = (time.perf_counter() - t0) / dt
    if args.cpp_dir:
        from bitnet.synth import synthesize
        from crossval.reference import locate, shim_for

        model = Path("bench/out/tokenizer-bench-llama3.gguf")
        if not model.exists():
            model.parent.mkdir(parents=True, exist_ok=True)
            synthesize(model, preset="tiny", arch="bitnet", fmt="f16", vocab_gguf=vocab)
        mod = shim_for(locate(args.cpp_dir))
        ffi, lib = mod.ffi, mod.lib
        h = lib.bh_load(str(model).encode(), 64, 1, 0)
        if h == ffi.NULL:
            raise SystemExit(f"libllama could not load {model}")
        buf = np.zeros(16384, np.int32)
        pb = ffi.cast("int *", buf.ctypes.data)
        raws = [p.encode("utf-8") for p in parts]
        t0 = time.perf_counter()
        ref = []
        for r in raws:
            n = lib.bh_tokenize(h, r, len(r), pb, buf.size, False, False)
            ref.append(buf[:n].tolist())
        rt = time.perf_counter() - t0
        lib.bh_free(h)
        res["llama_cpp_KB_s"] = n_bytes / rt / 1e3
        res["ratio_llama_cpp_over_ours"] = (n_bytes / rt) / (n_bytes / dt)
        res["identical_ids"] = ours == ref
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
