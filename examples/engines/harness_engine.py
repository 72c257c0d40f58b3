#!/usr/bin/env python3
"""A complete external engine for the `cmd:` adapter (protocol bitnet-harness-engine/1).

    bitnet crossval --engine 'cmd:python examples/engines/harness_engine.py' --model M.gguf --prompt "Hi"

It serves the protocol with bitnet-harness's own engine so that it runs anywhere the harness
does; to put YOUR engine under test, keep `main()` and replace the three functions marked
"your engine" (or write the same loop in your language: docs/reference/engine-protocol.md).
One process per request: read one JSON object from stdin, answer one on stdout, exit 0.
Logs go to stderr. Errors: print {"protocol": ..., "error": "why"} and exit non-zero.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

PROTOCOL = "bitnet-harness-engine/1"


# -- your engine -----------------------------------------------------------------------------
def describe(opts, model: str | None) -> dict:
    from bitnet import __version__

    numerics = opts.profile or (load(model, opts).model.profile.name if model else "unknown")
    return {
        "engine": {"name": "harness-example", "version": __version__, "build": "numpy kernels", "numerics": numerics},
        # loads: [arch, weight format] pairs this engine claims, or null for "try anything"
        "capabilities": {"logits": True, "greedy": True, "tokenize": True, "loads": opts.loads, "max_tokens": None},
    }


def load(model: str, opts):
    from bitnet.engine import Engine

    return Engine(model, profile=opts.profile)


def evaluate(engine, ids: list[int], n_greedy: int) -> tuple[np.ndarray, list[int]]:
    """float32 logits [len(ids), n_vocab] for every prompt position, and n_greedy greedy ids."""
    from bitnet.engine import SamplerConfig

    logits = engine.logits(ids).astype(np.float32)
    greedy = []
    if n_greedy:
        r = engine.generate(ids, max_tokens=n_greedy, sampler=SamplerConfig(greedy=True), ignore_eog=True)
        greedy = [int(t) for t in r.ids]
    return logits, greedy


def tokenize(engine, texts: list[str], add_special: bool, parse_special: bool) -> list[list[int]]:
    return [engine.encode(t, add_special=add_special, parse_special=parse_special) for t in texts]


# -- the protocol (keep as is) ---------------------------------------------------------------
def serve(req: dict, opts) -> dict:
    if req.get("protocol") != PROTOCOL:
        raise ValueError(f"unsupported protocol {req.get('protocol')!r}; this engine speaks {PROTOCOL}")
    op = req.get("op")
    if op == "describe":
        return describe(opts, req.get("model"))
    engine = load(req["model"], opts)
    if op == "evaluate":
        logits, greedy = evaluate(engine, [int(i) for i in req["ids"]], int(req.get("n_greedy", 0)))
        np.save(req["logits_path"], logits)
        return {"logits_shape": list(logits.shape), "greedy": greedy}
    if op == "tokenize":
        return {"tokens": tokenize(engine, req["texts"], bool(req.get("add_special")), bool(req.get("parse_special")))}
    raise ValueError(f"unknown op {op!r}")


def parse_args(argv: list[str]):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", help="numerics profile (default: the model's)")
    ap.add_argument("--loads", action="append", metavar="ARCH/FORMAT",
                    help="claim only these models (repeatable); default: claim everything")
    opts = ap.parse_args(argv)
    opts.loads = [x.split("/", 1) for x in opts.loads] if opts.loads else None
    return opts


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        reply = serve(json.load(sys.stdin), opts)
    except Exception as e:  # the protocol's error reply: the harness shows it with our stderr
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        json.dump({"protocol": PROTOCOL, "error": f"{type(e).__name__}: {e}"}, sys.stdout)
        return 1
    json.dump({"protocol": PROTOCOL, **reply}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
