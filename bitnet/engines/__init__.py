"""Engines the harness can judge, behind one protocol (docs/reference/engine-protocol.md).

    from bitnet.engines import open_engine
    eng = open_engine("cmd:python examples/engines/ours.py")
    eng.load("model.gguf")
    logits = eng.logits([1, 2, 3])          # float32 [3, n_vocab]
"""

from bitnet.engines.protocol import (
    CAPABILITIES,
    Capabilities,
    CapabilityMissing,
    Engine,
    EngineError,
    EngineInfo,
    EngineOutput,
    TimedRun,
    check_logits,
)
from bitnet.engines.registry import ENTRY_POINT_GROUP, known_kinds, open_engine, parse_spec

__all__ = [
    "CAPABILITIES", "Capabilities", "CapabilityMissing", "ENTRY_POINT_GROUP", "Engine", "EngineError",
    "EngineInfo", "EngineOutput", "TimedRun", "check_logits", "known_kinds", "open_engine", "parse_spec",
]
