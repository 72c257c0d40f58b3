"""Run hostile-input fuzz cases in this process under an address-space limit (AC25).

    python -m tests._fuzz_worker gguf --bases DIR --seed S --start I --count N --out R.json
    python -m tests._fuzz_worker gguf-hypothesis --bases DIR --count N --out R.json
    python -m tests._fuzz_worker receipts --bases DIR --seed S --count N --out R.json
    python -m tests._fuzz_worker gguf --bases DIR --seed S --start I --count 1 --keep F.gguf   (replay one)

Each case goes through the real command-line entry points in-process (`bitnet inspect`,
`inspect --json`, `tokenize`, `run`; `bitnet-verify-receipt`), and is judged by the house rule:
exit 0 (or 1 for a failed receipt rule), or exit 2 with exactly one stderr line. Anything else
is a failure: an exception escaping `main` (an untyped error), a MemoryError (the address-space
limit, `RLIMIT_AS`, makes an oversized allocation fail instead of swapping), a case running past
`CASE_TIMEOUT_S` (a hang), exit 2 with zero or several stderr lines, or a file left behind by a
refused `logits --out`. The parent test reads the JSON report and asserts zero failures.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

#: address space for the whole worker (Python, NumPy, Rich, the mapped model, a KV cache)
AS_LIMIT = 3 * 2**30
#: a case taking longer than this is a hang (the slowest honest case runs ~1 s on a loaded VM)
CASE_TIMEOUT_S = 120


class CaseTimeout(BaseException):
    pass


class StrictText(io.StringIO):
    """A text stream that, like a real UTF-8 stdout, cannot take lone surrogates (StringIO
    would accept them and hide a UnicodeEncodeError a terminal would raise)."""

    def write(self, s: str) -> int:
        s.encode("utf-8")
        return super().write(s)


def _alarm(_sig, _frame):
    raise CaseTimeout()


def _cli(argv: list[str]) -> tuple[int | None, str, str, str | None]:
    """(exit code, stdout, stderr, failure) of one in-process CLI call."""
    from bitnet.cli import IO, main

    out, err = StrictText(), StrictText()
    try:
        rc = main(argv, IO(out, err))
    except CaseTimeout:
        raise
    except MemoryError:
        return None, out.getvalue(), err.getvalue(), "MemoryError: " + traceback.format_exc(limit=-3).strip().splitlines()[-3]
    except BaseException as e:  # noqa: BLE001 - anything escaping main is the failure we look for
        tb = traceback.extract_tb(e.__traceback__)[-1]
        return None, out.getvalue(), err.getvalue(), f"{type(e).__name__}: {str(e)[:200]} at {tb.filename}:{tb.lineno}"
    return rc, out.getvalue(), err.getvalue(), None


def _judge(argv: list[str], allowed: tuple[int, ...]) -> tuple[str, str | None]:
    rc, _out, err, failure = _cli(argv)
    if failure:
        return "crash", failure
    if rc == 2:
        lines = err.splitlines()
        if len(lines) != 1:
            return "bad-stderr", f"exit 2 with {len(lines)} stderr lines: {err[:300]!r}"
        return "refused", None
    if rc not in allowed:
        return "bad-exit", f"exit {rc}: {err[:300]!r}"
    return "ok", None


def _gguf_commands(path: str, tmp: str) -> list[tuple[list[str], tuple[int, ...]]]:
    out = os.path.join(tmp, "logits.npz")
    return [
        (["inspect", "--json", path], (0,)),
        (["inspect", path], (0,)),
        (["tokenize", path, "Hello [INST] wörld <|eot_id|>", "--parse-special"], (0,)),
        (["run", "--model", path, "--backend", "numpy", "--max-tokens", "2", "--seed", "1", "--prompt", "Hi there"], (0,)),
        (["logits", "--model", path, "--backend", "numpy", "--ids", "1,2", "--out", out], (0,)),
    ]


def check_gguf(data: bytes, tmp: str) -> dict:
    path = os.path.join(tmp, "case.gguf")
    with open(path, "wb") as fh:
        fh.write(data)
    outcomes = {}
    for argv, allowed in _gguf_commands(path, tmp):
        outcome, why = _judge(argv, allowed)
        if argv[0] == "logits":
            npz = argv[-1]
            if outcome != "ok" and os.path.exists(npz):
                outcome, why = "partial-file", f"{npz} left behind by a refused logits"
            if os.path.exists(npz):
                os.unlink(npz)
            leftovers = [f for f in os.listdir(tmp) if f.endswith(".tmp")]
            if leftovers:
                outcome, why = "partial-file", f"temporary files left: {leftovers}"
        outcomes[argv[0] + (" --json" if "--json" in argv else "")] = (outcome, why)
        if why:
            return {"outcomes": outcomes, "failure": f"{' '.join(argv[:2])}: {why}"}
    return {"outcomes": outcomes, "failure": None}


def check_receipt(data: bytes, tmp: str) -> dict:
    from bitnet.cli import IO
    from bitnet.cli.verify_receipt import main as verify_main

    path = os.path.join(tmp, "case.json")
    with open(path, "wb") as fh:
        fh.write(data)
    outcomes = {}
    for argv in ([path], [path, "--json"]):
        out, err = StrictText(), StrictText()
        try:
            rc = verify_main(argv, IO(out, err))
        except CaseTimeout:
            raise
        except BaseException as e:  # noqa: BLE001
            tb = traceback.extract_tb(e.__traceback__)[-1]
            return {"outcomes": outcomes, "failure": f"{type(e).__name__}: {str(e)[:200]} at {tb.filename}:{tb.lineno}"}
        key = "json" if "--json" in argv else "table"
        if rc == 2 and len(err.getvalue().splitlines()) != 1:
            return {"outcomes": outcomes, "failure": f"exit 2 with stderr {err.getvalue()[:300]!r}"}
        if rc not in (0, 1, 2):
            return {"outcomes": outcomes, "failure": f"exit {rc}"}
        if rc in (0, 1) and err.getvalue():
            return {"outcomes": outcomes, "failure": f"exit {rc} with stderr {err.getvalue()[:300]!r}"}
        outcomes[key] = ({0: "pass", 1: "rule-failed", 2: "refused"}[rc], None)
    return {"outcomes": outcomes, "failure": None}


def _limit_memory() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = AS_LIMIT if hard == resource.RLIM_INFINITY else min(AS_LIMIT, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _bases(d: str, kind: str) -> list[Path]:
    ext = ".gguf" if kind.startswith("gguf") else ".json"
    return sorted(p for p in Path(d).iterdir() if p.suffix == ext)


def _save(report: dict, out: str | None) -> None:
    """Write the report atomically (also every `PROGRESS_EVERY` cases: a long run killed early
    still leaves its counts)."""
    if out:
        tmp = out + ".part"
        Path(tmp).write_text(json.dumps(report, indent=1))
        os.replace(tmp, out)


PROGRESS_EVERY = 250


def run_cases(kind: str, bases_dir: str, seed: int, start: int, count: int, keep: str | None = None,
              out: str | None = None) -> dict:
    import logging
    import warnings

    from tests import _gguf_mutator as gm
    from tests import _receipt_mutator as rm

    warnings.simplefilter("ignore")
    logging.disable(logging.CRITICAL)
    bases = _bases(bases_dir, kind)
    parsed = [gm.Parts.parse(b) for b in bases] if kind.startswith("gguf") else [b.read_bytes() for b in bases]
    signal.signal(signal.SIGALRM, _alarm)
    report = {"kind": kind, "seed": seed, "start": start, "cases": 0, "outcomes": {}, "failures": [],
              "families": {}, "bases": [b.name for b in bases]}
    t0 = time.perf_counter()

    def one(case_id: str, data: bytes, what: list[str]) -> None:
        with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:
            signal.alarm(CASE_TIMEOUT_S)
            try:
                r = check_gguf(data, tmp) if kind.startswith("gguf") else check_receipt(data, tmp)
            except CaseTimeout:
                r = {"outcomes": {}, "failure": f"hang: over {CASE_TIMEOUT_S} s"}
            finally:
                signal.alarm(0)
        report["cases"] += 1
        for fam in what:
            name = fam.split(":")[0].split(" ")[0]
            report["families"][name] = report["families"].get(name, 0) + 1
        for cmd, (outcome, _) in r["outcomes"].items():
            report["outcomes"].setdefault(cmd, {}).setdefault(outcome, 0)
            report["outcomes"][cmd][outcome] += 1
        if r["failure"]:
            report["failures"].append({"case": case_id, "mutations": what, "failure": r["failure"]})
        if report["cases"] % PROGRESS_EVERY == 0:
            report["seconds"] = time.perf_counter() - t0
            _save(report, out)

    if kind == "gguf-hypothesis":
        from hypothesis import HealthCheck, given, settings
        from hypothesis import strategies as st

        @settings(max_examples=count, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(st.data())
        def prop(data):
            c = gm.HypothesisChooser(data)
            base = parsed[c.integer(0, len(parsed) - 1)]
            buf, what = gm.mutate(base, c)
            one(f"hypothesis#{report['cases']}", buf, what)

        prop()
    else:
        for i in range(start, start + count):
            c = gm.SeededChooser(seed * 1_000_003 + i)
            bi = c.integer(0, len(parsed) - 1)
            if kind == "gguf":
                buf, what = gm.mutate(parsed[bi], c)
            else:
                buf, what = rm.mutate(parsed[bi], c)
            if keep:
                Path(keep).write_bytes(buf)
            one(f"{kind}:{seed}:{i}:{bases[bi].name}", buf, what)
    report["seconds"] = time.perf_counter() - t0
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=("gguf", "gguf-hypothesis", "receipts"))
    ap.add_argument("--bases", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--out")
    ap.add_argument("--keep", help="write the (last) mutated file here, for replaying a failure")
    args = ap.parse_args(argv)
    _limit_memory()
    report = run_cases(args.kind, args.bases, args.seed, args.start, args.count, args.keep, args.out)
    report["done"] = True
    if args.out:
        _save(report, args.out)
    else:
        print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
