"""One comparison end to end: the reference in a worker process, our engine under the same
timeout, the gates, and (optionally) the parity receipt."""

from __future__ import annotations

import concurrent.futures
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from crossval.parity import ParityResult, compare, errored, parity_receipt, write_parity_receipt
from crossval.runner import run_reference
from crossval.timeouts import PARITY_TIMEOUT_S


def _ours(model: Path, ids: list[int], numerics: str | None, strict: bool, n_greedy: int, backend: str,
          apply_corrections: bool = False):
    from bitnet.engine import Engine, SamplerConfig
    from bitnet.kernels import dispatch

    dispatch.set_backend(backend)
    t0 = time.perf_counter()
    engine = Engine(model, profile=numerics, strict=strict, apply_corrections=apply_corrections)
    logits = engine.logits(ids)
    greedy = []
    if n_greedy:
        r = engine.generate(ids, max_tokens=n_greedy, sampler=SamplerConfig(greedy=True), ignore_eog=True)
        greedy = r.ids
    return logits, greedy, engine.model.profile.name, time.perf_counter() - t0, engine.model.corrections


def crossval_model(cpp_dir: str | os.PathLike[str], model: str | os.PathLike[str], ids: Sequence[int], *,
                   profile: str = "exact", numerics: str | None = None, n_greedy: int = 8, strict: bool = True,
                   backend: str = "numpy", receipt: str | os.PathLike[str] | None = None,
                   timeout: float = PARITY_TIMEOUT_S, worker_argv: Sequence[str] | None = None,
                   apply_corrections: bool = False) -> ParityResult:
    ids = [int(i) for i in ids]
    model = Path(model)
    t0 = time.perf_counter()
    ref = run_reference(cpp_dir, model, ids=ids, n_greedy=n_greedy, timeout=timeout, worker_argv=worker_argv)
    ref_s = time.perf_counter() - t0
    if not ref.ok:
        return errored(f"reference: {ref.error}", profile)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    fut = pool.submit(_ours, model, ids, numerics, strict, n_greedy, backend, apply_corrections)
    try:
        ours, greedy, numerics_used, ours_s, corrections = fut.result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        pool.shutdown(wait=False, cancel_futures=True)
        return errored(f"ours: the engine ran past {timeout:g} s", profile)
    except Exception as e:  # our engine refusing the model (strict mode, format) is an error verdict
        pool.shutdown(wait=False)
        return errored(f"ours: {type(e).__name__}: {e}", profile)
    pool.shutdown(wait=False)
    ref_logits = ref.data["logits"]
    if ours.shape != ref_logits.shape:
        return errored(f"logits shapes differ: ours {ours.shape}, reference {ref_logits.shape} "
                       f"(vocab: ours {ours.shape[1]}, libllama {int(ref.data['n_vocab'])})", profile)
    result = compare(ours, ref_logits, profile, greedy_ours=greedy, greedy_ref=ref.data.get("greedy", np.zeros(0)))
    if receipt is not None:
        write_parity_receipt(receipt, parity_receipt(
            result, model=model, prompt_ids=ids,
            reference={"libllama": str(ref.data["libllama"]), "api": str(ref.data["api"]), "version": str(ref.data["version"])},
            ours={"numerics_profile": numerics_used, "backend": backend, "strict": strict},
            timings={"reference_s": ref_s, "ours_s": ours_s, "timeout_s": timeout},
            corrections=corrections,
        ))
    return result


def tokenizer_parity(cpp_dir: str | os.PathLike[str], model: str | os.PathLike[str], texts: Sequence[str], *,
                     add_special: bool = False, parse_special: bool = False) -> tuple[list[int], int, int]:
    """Indices of texts whose ids differ, plus (our real vocab size, libllama's n_vocab)."""
    from bitnet.errors import BridgeError
    from bitnet.tokenizer import load_tokenizer

    ref = run_reference(cpp_dir, model, texts=list(texts), add_special=add_special, parse_special=parse_special)
    if not ref.ok:
        raise BridgeError(f"reference tokenizer: {ref.error}")
    tok = load_tokenizer(model)
    bad = [i for i, t in enumerate(texts)
           if tok.encode(t, add_special=add_special, parse_special=parse_special) != ref.data[f"tok_{i}"].tolist()]
    return bad, tok.real_vocab_size, int(ref.data["n_vocab"])
