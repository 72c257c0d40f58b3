"""`bitnet run`: generate text, streaming tokens to stdout (native C kernels when they build, else
the NumPy reference kernels; --backend chooses)."""

from __future__ import annotations

import argparse
import json

from bitnet.cli.args import count, finite_float, input_file, nonempty_utf8, seed, utf8
from bitnet.cli.backend_args import add_backend_args, select_backend
from bitnet.engine import CHAT_TEMPLATE_2B4T, Engine, SamplerConfig
from bitnet.engine.generate import DEFAULT_SYSTEM, env_seed
from bitnet.errors import ConfigError
from bitnet.model.profiles import PROFILES

DEFAULT_PROMPT = "The quick brown fox"


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=input_file, help="GGUF model (default: the embedded tiny model, random weights)")
    p.add_argument("--profile", choices=sorted(PROFILES),
                   help="numerics profile (default: bitnet.cpp for I2_S bitnet-b1.58, llama.cpp for TQ bitnet, else reference)")
    p.add_argument("--strict", action="store_true", default=None,
                   help="strict mode: every fallback is an error (also BITNET_STRICT_MODE=1)")
    p.add_argument("--apply-corrections", action="store_true",
                   help="apply the validation policy's named corrections (recorded in receipts)")


def resolve_model(args: argparse.Namespace, io) -> str:
    if args.model:
        return args.model
    from bitnet.synth.default import default_model_path

    path = default_model_path()
    print(f"bitnet {args.command}: no --model: using the embedded default model {path} "
          "(tiny synthetic BitNet, random weights: its text is noise)", file=io.stderr)
    return str(path)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="generate text")
    add_model_args(p)
    add_backend_args(p)
    p.add_argument("--prompt", type=utf8, default=DEFAULT_PROMPT)
    p.add_argument("--max-tokens", type=count, default=32)
    p.add_argument("--temperature", type=finite_float, default=0.8)
    p.add_argument("--top-k", type=count, default=40)
    p.add_argument("--top-p", type=finite_float, default=0.95)
    p.add_argument("--repeat-penalty", type=finite_float, default=1.0)
    p.add_argument("--seed", type=seed, help="sampling seed 0..2**63-1 (also BITNET_SEED; BITNET_DETERMINISTIC=1 means 0)")
    p.add_argument("--greedy", action="store_true", help="always take the most likely token")
    p.add_argument("--stop", type=nonempty_utf8, action="append", default=[], help="stop string (repeatable, not empty)")
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the 2B-4T chat template")
    p.add_argument("--system", type=utf8, default=None, help=f"system text for --chat (default: {DEFAULT_SYSTEM!r})")
    p.add_argument("--json", action="store_true", help='print {"prompt_ids", "ids", "text", "timings"} instead of streaming')
    p.set_defaults(func=run)


def run(args: argparse.Namespace, io) -> int:
    if args.system is not None and not args.chat:
        raise ConfigError("--system is the system text of --chat; add --chat or drop --system")
    sampler = SamplerConfig(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                            repeat_penalty=args.repeat_penalty, greedy=args.greedy)
    seed = args.seed if args.seed is not None else env_seed()  # a bad BITNET_SEED fails before loading
    backend = select_backend(args, io, "run")
    engine = Engine(resolve_model(args, io), profile=args.profile, strict=args.strict,
                    apply_corrections=args.apply_corrections, weights=args.weights)
    prompt = args.prompt
    if args.chat:
        prompt = CHAT_TEMPLATE_2B4T.format(system=DEFAULT_SYSTEM if args.system is None else args.system, user=prompt)

    def stream(_tok: int, piece: str) -> None:
        io.stdout.write(piece)
        io.stdout.flush()

    result = engine.generate(prompt, max_tokens=args.max_tokens, sampler=sampler, seed=seed,
                             stop=args.stop, on_token=None if args.json else stream)
    if args.json:
        json.dump({**result.to_json(), "backend": backend}, io.stdout)
        io.stdout.write("\n")
    else:
        io.stdout.write("\n")
        t = result.timings
        n = len(t.decode_step_s)
        rate = f"{n / t.decode_s:.1f} tok/s" if n and t.decode_s > 0 else "n/a"
        print(f"[{len(result.prompt_ids)} prompt tokens, {len(result.ids)} generated ({result.stop_reason}); "
              f"prefill {t.prefill_s * 1e3:.1f} ms, decode {rate}; profile {result.profile}; backend {backend}]", file=io.stderr)
    return 0
