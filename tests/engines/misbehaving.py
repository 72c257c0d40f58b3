"""External engines that break the cmd: protocol, one way each (`misbehaving.py MODE`)."""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import numpy as np

P = "bitnet-harness-engine/1"
DESCRIBE = {"protocol": P, "engine": {"name": "misbehaving", "version": "0", "build": "test", "numerics": "unknown"},
            "capabilities": {"logits": True, "greedy": False, "tokenize": False, "loads": None}}


def main(mode: str) -> int:
    req = json.load(sys.stdin)
    print(f"misbehaving engine, mode {mode}, op {req['op']}", file=sys.stderr)
    if req["op"] == "describe" and mode != "describe-garbage":
        json.dump(DESCRIBE, sys.stdout)
        return 0
    if mode == "crash":
        os.kill(os.getpid(), signal.SIGSEGV)
    if mode == "hang":
        time.sleep(600)
    if mode == "exit3":
        print("out of memory (pretend)", file=sys.stderr)
        return 3
    if mode in ("garbage", "describe-garbage"):
        print("this is not json")
        return 0
    if mode == "wrong-protocol":
        json.dump({"protocol": "someone-else/9"}, sys.stdout)
        return 0
    n = len(req["ids"])
    if mode == "wrong-shape":
        np.save(req["logits_path"], np.zeros((n + 1, 384), np.float32))
    elif mode == "float64":
        np.save(req["logits_path"], np.zeros((n, 384), np.float64))
    elif mode == "nan":
        a = np.zeros((n, 384), np.float32)
        a[n - 1, 7] = np.nan
        np.save(req["logits_path"], a)
    elif mode == "no-file":
        pass
    json.dump({"protocol": P, "logits_shape": [n, 384]}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
