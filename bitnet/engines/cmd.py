"""`cmd:"PROGRAM ARGS"`: any executable, in any language, through the versioned engine protocol
(docs/reference/engine-protocol.md). One process per request:

- the harness writes ONE JSON request on the program's stdin and closes it;
- the program answers with ONE JSON object on stdout (logs go to stderr) and exits 0;
- logits travel as a float32 `.npy` file [T, n_vocab] written to the path the request names.

A non-zero exit, a death by signal, a reply that is not the protocol's JSON, logits of the wrong
shape or dtype, or running past the timeout is an `EngineError` that carries the program's
stderr tail: a comparison meeting it ends with verdict `error`.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bitnet.engines.protocol import (
    Capabilities,
    EngineError,
    EngineInfo,
    EngineOutput,
    RoundTripEngine,
    check_logits,
)
from bitnet.errors import ConfigError

PROTOCOL = "bitnet-harness-engine/1"
OPS = ("describe", "evaluate", "tokenize")
STDERR_TAIL = 800


def from_spec(spec: str, arg: str) -> CmdEngine:
    try:
        argv = shlex.split(arg)
    except ValueError as e:
        raise ConfigError(f"{spec}: cannot split the command line: {e}") from None
    if not argv:
        raise ConfigError(f'{spec}: name the program, cmd:"PROGRAM ARGS"')
    return CmdEngine(spec, argv)


def _tail(text: str) -> str:
    """The last STDERR_TAIL characters, on one line (lines joined with " | ")."""
    t = " | ".join(line for line in text.strip().splitlines() if line.strip())
    return ("..." + t[-STDERR_TAIL:]) if len(t) > STDERR_TAIL else t


class CmdEngine(RoundTripEngine):
    kind = "cmd"

    def __init__(self, spec: str, argv: Sequence[str], *, timeout: float | None = None):
        super().__init__(spec)
        self.argv = list(argv)
        #: seconds per request; None until a comparison (crossval.pair) sets the shared parity
        #: timeout, and then no limit when used on its own
        self.timeout = timeout
        self._described: dict | None = None

    # -- the wire --------------------------------------------------------------------------
    def request(self, req: dict) -> dict:
        """Run the program once with `req` on stdin; return its reply or raise EngineError."""
        body = json.dumps({"protocol": PROTOCOL, **req})
        try:
            p = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, start_new_session=True)  # its own group: a timeout kills its children too
        except OSError as e:
            raise EngineError(f"{self.spec}: cannot start {self.argv[0]!r}: {e.strerror or e}") from None
        try:
            out, err = p.communicate(body, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            out, err = p.communicate()
            raise EngineError(f"{self.spec}: timeout: op {req['op']!r} ran past {self.timeout:g} s and was killed; "
                              f"stderr: {_tail(err)}") from None
        if p.returncode < 0:
            try:
                name = signal.Signals(-p.returncode).name
            except ValueError:
                name = f"signal {-p.returncode}"
            raise EngineError(f"{self.spec}: crash: op {req['op']!r} died with {name}; stderr: {_tail(err)}")
        reply = None
        try:
            reply = json.loads(out)
        except ValueError:
            pass
        if p.returncode != 0:
            said = reply.get("error") if isinstance(reply, dict) else None
            raise EngineError(f"{self.spec}: op {req['op']!r} exited {p.returncode}"
                              f"{': ' + str(said) if said else ''}; stderr: {_tail(err)}")
        if not isinstance(reply, dict):
            raise EngineError(f"{self.spec}: op {req['op']!r}: the reply on stdout is not one JSON object "
                              f"(got {_tail(out)[:200]!r}); stderr: {_tail(err)}")
        if reply.get("protocol") != PROTOCOL:
            raise EngineError(f"{self.spec}: op {req['op']!r}: reply speaks protocol {reply.get('protocol')!r}, "
                              f"expected {PROTOCOL!r}")
        if "error" in reply:
            raise EngineError(f"{self.spec}: op {req['op']!r}: the engine says: {reply['error']}; stderr: {_tail(err)}")
        return reply

    # -- describe / capabilities -----------------------------------------------------------
    def _describe(self) -> dict:
        if self._described is None:
            req = {"op": "describe"}
            if self.model is not None:
                req["model"] = str(self.model.resolve())
            r = self.request(req)
            eng, caps = r.get("engine"), r.get("capabilities")
            if not isinstance(eng, dict) or not isinstance(caps, dict):
                raise EngineError(f"{self.spec}: describe reply lacks 'engine' and 'capabilities' objects")
            self._described = r
        return self._described

    @property
    def capabilities(self) -> Capabilities:  # type: ignore[override]
        c = self._describe()["capabilities"]
        loads = c.get("loads")
        try:
            loads_t = None if loads is None else tuple((str(a), str(f)) for a, f in loads)
        except (TypeError, ValueError):
            raise EngineError(f"{self.spec}: capabilities.loads must be null or a list of [arch, format] pairs, "
                              f"got {loads!r}") from None
        why = {k: "the engine declares it cannot" for k in ("logits", "greedy", "tokenize") if not c.get(k, k == "logits")}
        return Capabilities(logits=bool(c.get("logits", True)), greedy=bool(c.get("greedy", False)),
                            tokenize=bool(c.get("tokenize", False)), loads=loads_t,
                            max_tokens=c.get("max_tokens"), why_not=why)

    def describe(self) -> EngineInfo:
        e = self._describe()["engine"]
        return EngineInfo(self.spec, str(e.get("name", self.argv[0])), str(e.get("version", "unknown")),
                          str(e.get("build", "unknown")), str(e.get("numerics", "unknown")))

    # -- work ------------------------------------------------------------------------------
    def evaluate(self, ids: Sequence[int], n_greedy: int = 0) -> EngineOutput:
        model = self._need_model()
        self.require("logits")
        if n_greedy:
            self.require("greedy")
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="bitnet-engine-") as tmp:
            path = Path(tmp) / "logits.npy"
            r = self.request({"op": "evaluate", "model": str(model.resolve()), "ids": [int(i) for i in ids],
                              "n_greedy": int(n_greedy), "logits_path": str(path)})
            if not path.is_file():
                raise EngineError(f"{self.spec}: evaluate: no logits at {path} (the request's logits_path)")
            try:
                lg = np.load(path, allow_pickle=False)
            except (ValueError, OSError) as e:
                raise EngineError(f"{self.spec}: evaluate: {path} is not a .npy array: {e}") from None
        lg = check_logits(self.spec, lg, len(ids))
        said = r.get("logits_shape")
        if said is not None and list(said) != list(lg.shape):
            raise EngineError(f"{self.spec}: evaluate: reply says logits_shape {said}, the file holds {list(lg.shape)}")
        g = r.get("greedy", [])
        if n_greedy and (not isinstance(g, list) or len(g) != n_greedy or not all(isinstance(i, int) for i in g)):
            raise EngineError(f"{self.spec}: evaluate: 'greedy' must be a list of {n_greedy} token ids, got {g!r}")
        return EngineOutput(lg, [int(i) for i in g] if n_greedy else [], time.perf_counter() - t0)

    def tokenize_many(self, texts, add_special: bool = False, parse_special: bool = False) -> list[list[int]]:
        self.require("tokenize")
        r = self.request({"op": "tokenize", "model": str(self._need_model().resolve()), "texts": list(texts),
                          "add_special": bool(add_special), "parse_special": bool(parse_special)})
        toks = r.get("tokens")
        if not isinstance(toks, list) or len(toks) != len(texts) or \
                not all(isinstance(t, list) and all(isinstance(i, int) for i in t) for t in toks):
            raise EngineError(f"{self.spec}: tokenize: 'tokens' must be {len(texts)} lists of ids")
        return toks
