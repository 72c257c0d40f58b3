"""An external engine for the cmd: adapter built from ours with one planted fault
(`--fault NAME`, the planted faults of crossval/faults.py; `--fault none` plants nothing):
the teeth of the parity gates, seen from outside the process."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main(argv: list[str]) -> int:
    import contextlib

    from crossval.faults import plant

    fault = argv[argv.index("--fault") + 1]
    rest = [a for i, a in enumerate(argv) if a != "--fault" and (i == 0 or argv[i - 1] != "--fault")]
    spec = importlib.util.spec_from_file_location("harness_engine", ROOT / "examples" / "engines" / "harness_engine.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with plant(fault) if fault != "none" else contextlib.nullcontext():
        return mod.main(rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
