"""A structure-aware receipt mutator for the hostile-input fuzz suite (AC25).

A real receipt (fixtures/receipts/good/*.json) is parsed, one of its values (chosen by its path)
is replaced by something hostile, and the text is written back; values JSON cannot express
through `json.dumps` (10**400, NaN, a lone-surrogate escape, nesting 100,000 deep) are spliced
in as raw text. Encodings (UTF-16 with and without BOM, Latin-1, UTF-8 with BOM), duplicate
keys, truncation and bit flips come on top.
"""

from __future__ import annotations

import json
from typing import Any

from tests._gguf_mutator import Chooser

RAW_VALUES = [
    "1" + "0" * 400, "-1" + "0" * 400, "1e400", "-1e400", "1e-400", "NaN", "Infinity", "-Infinity",
    str(2**63), str(2**64), "-0.0", "1e308", '"\\ud800"', '"a\\udfffb"', '"\\u0000"', '"\\u001b[2J"',
]
STRINGS = ["[/bold]", "[/INST]", "[bold red]x", "[link=file:///etc/passwd]x[/link]", ":smile:", "\x1b[31m",
           "\u202e\u0645", "", "x" * 5000, "i2s_[/bold]_gemv"]
OTHER = [None, True, 0, -1, 1.5, [], {}, [1, 2], {"a": 1}, "abc"]
DEPTHS = [3, 63, 64, 65, 200, 5000, 100_000]


def _paths(x: Any, here: tuple = ()) -> list[tuple]:
    out = [here]
    if isinstance(x, dict):
        for k, v in x.items():
            out += _paths(v, (*here, k))
    elif isinstance(x, list):
        for i, v in enumerate(x[:8]):
            out += _paths(v, (*here, i))
    return out


def _set(doc: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    cur = doc
    for p in path[:-1]:
        cur = cur[p]
    cur[path[-1]] = value
    return doc


def mutate(base: bytes, c: Chooser) -> tuple[bytes, list[str]]:
    doc = json.loads(base)
    what: list[str] = []
    raw: dict[str, str] = {}
    for n in range(c.integer(1, 3)):
        paths = _paths(doc)
        path = c.choice(paths[1:] if len(paths) > 1 else paths)
        fam = c.choice(["raw", "string", "other", "nest", "markup_known"])
        if fam == "raw":
            marker = f"@@RAW{n}@@"
            raw[marker] = c.choice(RAW_VALUES)
            doc = _set(doc, path, marker)
        elif fam == "string":
            doc = _set(doc, path, c.choice(STRINGS))
        elif fam == "other":
            doc = _set(doc, path, c.choice(OTHER))
        elif fam == "nest":
            d = c.choice(DEPTHS)
            marker = f"@@RAW{n}@@"
            raw[marker] = "[" * d + "]" * d
            doc = _set(doc, path, marker)
        else:  # the fields the issue names: a kernel id, a GPU name
            if isinstance(doc, dict):
                k = c.choice(["kernels", "machine"])
                if k == "kernels" and isinstance(doc.get("kernels"), list) and doc["kernels"] and isinstance(doc["kernels"][0], dict):
                    doc["kernels"][0]["id"] = c.choice(STRINGS)
                elif isinstance(doc.get("machine"), dict):
                    doc["machine"]["gpu"] = {"name": c.choice(STRINGS + ["\\ud800"]), "compute_capability": "[/]",
                                             "driver": "x", "memory_bytes": 1}
        what.append(f"{fam} at {'/'.join(map(str, path))}")
    text = json.dumps(doc, indent=c.choice([None, 2]), ensure_ascii=c.chance(0.5))
    for marker, value in raw.items():
        text = text.replace(json.dumps(marker), value)
    if c.chance(0.15):
        key = c.choice(["schema_version", "kernels", "compute_path"])
        text = text.replace("{", '{"' + key + '": "dup", ', 1)
        what.append("duplicate key")
    enc = c.choice(["utf-8"] * 6 + ["utf-16", "utf-16-le", "utf-8-sig", "latin-1", "utf-32"])
    if enc == "latin-1":
        text = text.replace('"', '"\u00e9', 1) if c.chance(0.5) else text
    data = text.encode(enc, "surrogatepass" if enc.startswith("utf") else "replace")
    if enc != "utf-8":
        what.append(f"encoded {enc}")
    if c.chance(0.1):
        at = c.integer(0, max(0, len(data) - 1))
        data = data[:at]
        what.append(f"truncate at {at}")
    if c.chance(0.1):
        b = bytearray(data)
        for _ in range(c.integer(1, 8)):
            if b:
                b[c.integer(0, len(b) - 1)] ^= 1 << c.integer(0, 7)
        data = bytes(b)
        what.append("bit flips")
    return data, what
