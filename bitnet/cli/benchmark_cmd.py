"""`bitnet benchmark`: one warm-up, then a real timed run, written as a receipt only if the run
succeeded (atomically; a failed run writes nothing and exits non-zero)."""

from __future__ import annotations

import argparse
import os
import time
from collections import Counter

from bitnet.cli.args import input_file, output_file, positive, seed, utf8
from bitnet.cli.backend_args import add_backend_args, native_threads, select_backend
from bitnet.cli.run_cmd import add_model_args, resolve_model
from bitnet.engine import Engine, SamplerConfig
from bitnet.engine.generate import deterministic_env
from bitnet.errors import ConfigError
from bitnet.files.atomic import check_writable
from bitnet.kernels.runlog import KERNEL_LOG
from bitnet.progress import add_quiet_arg, progress
from bitnet.receipts.build import RunMeasurement, build_receipt, write_receipt
from bitnet.receipts.machine import peak_rss_bytes
from bitnet.receipts.probe import DEFAULT_MIB, measure_bandwidth

BENCH_PROMPT = "The quick brown fox jumps over the lazy dog. " * 4


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("benchmark", help="time a real generation run and write a receipt")
    add_model_args(p)
    p.add_argument("--tokens", type=positive, default=32, help="tokens to decode (EOS is ignored)")
    p.add_argument("--prompt", type=utf8, default=BENCH_PROMPT, help="prompt text (tokenized with the model's tokenizer)")
    add_backend_args(p, cuda=True)
    p.add_argument("--seed", type=seed, default=None)
    p.add_argument("--deterministic", action="store_true", help="greedy decoding, seed 0")
    p.add_argument("--out", type=output_file, help="receipt path (written atomically after a successful run)")
    p.add_argument("--sign-key", metavar="KEY", type=input_file,
                   help="sign the receipt with this Ed25519 private key (bitnet keygen; needs the [sign] extra)")
    p.add_argument("--engine", metavar="SPEC",
                   help="time another engine through its adapter (reference[:PROFILE][@BACKEND], libllama:DIR, hf:, "
                        "cmd:\"PROGRAM ARGS\"); the receipt says which fields the harness measured and which it "
                        "could not see (docs/reference/receipts.md)")
    p.add_argument("--probe-mib", type=positive, default=DEFAULT_MIB,
                   help=f"buffer size of the memory-bandwidth probe recorded in the receipt (MiB, default {DEFAULT_MIB})")
    add_quiet_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace, io) -> int:
    if args.sign_key:
        from bitnet.receipts.signing import load_private_key

        load_private_key(args.sign_key)  # a bad key fails before the run, not after it
    receipt = measure(args, io)
    if receipt is None:
        return 0
    if args.sign_key:
        from bitnet.receipts.signing import sign_receipt

        receipt = sign_receipt(receipt, args.sign_key)
    if args.out:
        write_receipt(args.out, receipt)
        print(f"wrote {args.out}" + (" (signed)" if args.sign_key else ""), file=io.stdout)
    return 0


def measure(args: argparse.Namespace, io) -> dict | None:
    """One warm-up and one timed run as `args` describe; the receipt, or None when the cuda
    backend has no device (SKIP). `bitnet-verify-receipt --rerun` calls this too."""
    if args.tokens < 1:
        raise ConfigError("--tokens must be >= 1")
    if args.probe_mib < 1:
        raise ConfigError("--probe-mib must be >= 1")
    if args.out:
        check_writable(args.out, "--out")  # before minutes of benchmark, not after
    if getattr(args, "engine", None):
        from bitnet.receipts.engine_receipt import (
            apply_reference_spec,
            check_engine_options,
            is_reference_spec,
            measure_engine,
        )

        if not is_reference_spec(args.engine):
            check_engine_options(args)
            return measure_engine(args, io, resolve_model(args, io))
        apply_reference_spec(args)  # our own engine: the ordinary benchmark below
    backend = select_backend(args, io, "benchmark")
    if backend.startswith("skip:"):
        print("SKIP: no CUDA device available", file=io.stdout)
        print(f"bitnet benchmark: {backend[5:]}; no receipt written", file=io.stderr)
        return None
    deterministic = args.deterministic or deterministic_env()
    sampler = SamplerConfig(greedy=True) if deterministic else SamplerConfig()
    seed = 0 if deterministic and args.seed is None else args.seed
    t_start = time.perf_counter()
    # progress on stderr (a terminal only): a spinner naming the phase; updating it costs a
    # string assignment, drawing happens on rich's own thread
    with progress(f"benchmark ({backend}): loading the model", stream=io.stderr, quiet=args.quiet) as update:
        engine = Engine(resolve_model(args, io), profile=args.profile, strict=args.strict,
                        apply_corrections=args.apply_corrections, weights=args.weights)
        model = engine.model
        # warm-up: caches, BLAS threads, device uploads; not measured
        update(what=f"benchmark ({backend}): warm-up")
        engine.generate(args.prompt, max_tokens=2, sampler=sampler, seed=seed, ignore_eog=True)
        KERNEL_LOG.reset()
        marks: dict[str, list] = {}

        def decode_start() -> None:
            marks.setdefault("prefill", KERNEL_LOG.snapshot())
            update(what=f"benchmark ({backend}): decoding {args.tokens} tokens")

        update(what=f"benchmark ({backend}): prefill")
        t_run = time.perf_counter()
        result = engine.generate(args.prompt, max_tokens=args.tokens, sampler=sampler, seed=seed, ignore_eog=True,
                                 on_decode_start=decode_start)
        total = time.perf_counter() - t_run + engine.load_s
    everything = KERNEL_LOG.snapshot()
    prefill = {k.id: k for k in marks.get("prefill", [])}
    decode = []
    for k in everything:
        p = prefill.get(k.id)
        calls = k.calls - (p.calls if p else 0)
        if calls > 0:
            decode.append({"id": k.id, "calls": calls, "bytes_read": k.bytes_read - (p.bytes_read if p else 0),
                           "rows": k.rows - (p.rows if p else 0), "seconds": k.seconds - (p.seconds if p else 0)})
    gpu = None
    if backend == "cuda":
        from bitnet.kernels.cuda import gpu_fingerprint

        gpu = gpu_fingerprint().to_dict()
    m = RunMeasurement(
        model_path=engine.path, architecture=model.config.arch,
        formats=dict(Counter(w.flavor for layer in model.layers for w in layer.proj.values())),
        weight_bytes_per_token=model.bytes_per_token, backend=backend, profile=model.profile.name,
        prompt_text=args.prompt, prompt_ids=result.prompt_ids, generated_ids=result.ids,
        max_tokens=args.tokens, seed=result.seed, sampler=result.sampler, deterministic=deterministic,
        load_s=engine.load_s, prefill_s=result.timings.prefill_s, decode_step_s=result.timings.decode_step_s,
        total_s=total, kernels=[k.to_dict() for k in everything], decode_kernels=decode,
        peak_rss_bytes=peak_rss_bytes(), gpu=gpu, threads=native_threads(backend), corrections=model.corrections,
        weights=model.weights,
        projection_bytes=int(sum(w.nbytes for layer in model.layers for w in layer.proj.values())),
        context_length=int(model.config.n_ctx), vocab_size=int(model.config.n_vocab),
        prefill_cpu_s=result.timings.prefill_cpu_s, decode_step_cpu_s=list(result.timings.decode_step_cpu_s),
        memory_bandwidth=measure_bandwidth(native_threads(backend) or os.cpu_count() or 1, args.probe_mib),
    )
    receipt = build_receipt(m)
    tp = receipt["throughput"]
    print(f"{backend}: prefill {tp['prefill_tok_s']:.2f} tok/s ({len(result.prompt_ids)} tokens), "
          f"decode {tp['decode_tok_s']:.2f} tok/s ({len(result.ids)} tokens), profile {model.profile.name}; "
          f"wall {time.perf_counter() - t_start:.1f} s", file=io.stdout)
    return receipt
