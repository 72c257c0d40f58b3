"""Our engine against libllama (the pair of engines crossval.pair compares), and tokenizer
parity against libllama."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from crossval.pair import compare_engines
from crossval.parity import ParityResult
from crossval.runner import run_reference
from crossval.timeouts import PARITY_TIMEOUT_S


def crossval_model(cpp_dir: str | os.PathLike[str], model: str | os.PathLike[str], ids: Sequence[int], *,
                   profile: str = "exact", numerics: str | None = None, n_greedy: int = 8, strict: bool = True,
                   backend: str = "numpy", receipt: str | os.PathLike[str] | None = None,
                   timeout: float = PARITY_TIMEOUT_S, worker_argv: Sequence[str] | None = None,
                   apply_corrections: bool = False) -> ParityResult:
    """Our engine (`reference[:numerics]@backend`) against a libllama build: the engine pair of
    crossval.pair with libllama as the reference. `worker_argv` replaces the C++ worker (tests
    plant crashes with it); `apply_corrections` applies the validation policy's corrections on
    our side (recorded in the receipt)."""
    from bitnet.engines.reference import ReferenceEngine
    from crossval.engine import LibllamaEngine

    spec = "reference" + (f":{numerics}" if numerics else "") + f"@{backend}"
    ours = ReferenceEngine(spec, numerics, backend, strict=strict, apply_corrections=apply_corrections)
    ref = LibllamaEngine(f"libllama:{cpp_dir}", str(cpp_dir), timeout=timeout, worker_argv=worker_argv)
    try:
        return compare_engines(ours, ref, Path(model), ids, gate=profile, n_greedy=n_greedy, receipt=receipt,
                               timeout=timeout).result
    finally:
        ours.close()


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
