"""Our engine with a planted fault (crossval.faults) judged against the unmodified engine: the
comparison `crossval.compare.crossval_libllama` makes (prompt positions, teacher-forced decode
steps, every layer teacher-forced), with our own engine standing in for libllama, so it needs
no C++. Tests and the parity report's how-to use it to show what a caught bug looks like.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from crossval.pair import EngineComparison


def planted_fault_comparison(model: str | os.PathLike[str], ids: Sequence[int], fault: str, *,
                             numerics: str | None = None, n_greedy: int = 4, gate: str = "exact",
                             per_layer: bool = True, receipt: str | os.PathLike[str] | None = None
                             ) -> EngineComparison:
    """`reference:NUMERICS` with `fault` planted (the engine under test) against the same engine
    unmodified (the reference), on `model` and prompt `ids`."""
    from bitnet import __version__
    from bitnet.engines.protocol import EngineInfo
    from bitnet.model import BitNetModel
    from crossval.compare import engine_outputs, gate_family
    from crossval.faults import FAULTS, plant
    from crossval.layers import engine_l_out, teacher_forced_layers
    from crossval.parity import compare, gate_layers, parity_receipt, write_parity_receipt

    if fault not in FAULTS:
        from bitnet.errors import ConfigError

        raise ConfigError(f"unknown planted fault {fault!r}; known: {', '.join(FAULTS)}")
    ids = [int(i) for i in ids]
    clean = BitNetModel(model, profile=numerics, strict=False)
    try:
        first = engine_outputs(clean, ids, [], n_greedy)
        ref = engine_outputs(clean, ids, first.greedy, 0)
        l_out = engine_l_out(clean, ids) if per_layer else None
        family, prof = gate_family(clean), clean.profile.name
    finally:
        clean.close()
    with plant(fault):
        m = BitNetModel(model, profile=numerics, strict=False)
        try:
            out = engine_outputs(m, ids, first.greedy, n_greedy)
            layers = teacher_forced_layers(m, ids, l_out) if l_out is not None else None
        finally:
            m.close()
    result = compare(out.prompt_logits, ref.prompt_logits, gate, family=family, greedy_ours=out.greedy,
                     greedy_ref=first.greedy, decode_ours=out.decode_logits, decode_ref=ref.decode_logits,
                     decode_tokens=first.greedy)
    if layers is not None:
        result = gate_layers(result, layers)
    engine = EngineInfo(f"reference:{prof}+fault:{fault}", "bitnet-harness reference, planted fault", __version__,
                        f"backend numpy; planted: {FAULTS[fault].size}", prof)
    reference = EngineInfo(f"reference:{prof}", "bitnet-harness reference", __version__, "backend numpy", prof)
    c = EngineComparison(result, engine, reference, {})
    if receipt is not None:
        c.receipt = write_parity_receipt(receipt, parity_receipt(
            result, model=Path(model), prompt_ids=ids, engine=engine.to_dict(), reference=reference.to_dict(),
            timings={}))
    return c
