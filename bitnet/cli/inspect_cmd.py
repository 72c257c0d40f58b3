"""`bitnet inspect MODEL.gguf`: metadata and tensor table (rich), or `--json`."""

from __future__ import annotations

import argparse
import json
from typing import Any, Literal

import numpy as np

from bitnet.cli.args import console, input_file, markup_safe
from bitnet.errors import BitNetError, naming_file
from bitnet.gguf.reader import Field, GGUFReader, StringArray

ARRAY_PREVIEW = 8


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="show a GGUF file's metadata and tensors")
    p.add_argument("model", nargs="?", type=input_file, help="path of a .gguf file")
    p.add_argument("--demo", action="store_true",
                   help="inspect the embedded default model (a tiny synthetic model, random weights)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--full-arrays", action="store_true", help="do not summarise long arrays in --json")
    p.add_argument("--strict-loader", action="store_true", default=None,
                   help="reject any tensor whose size deviates from its flavor's (also BITNET_STRICT_MODE=1)")
    p.set_defaults(func=run)


def _value_summary(f: Field, full: bool = False) -> Any:
    v = f.value
    if f.type.name != "ARRAY":
        return v
    n = len(v)
    if isinstance(v, np.ndarray):
        items = v.tolist()
    elif isinstance(v, StringArray):
        items = list(v) if full or n <= ARRAY_PREVIEW else [v[i] for i in range(ARRAY_PREVIEW)]
    else:
        items = [x[0].tolist() if isinstance(x[0], np.ndarray) else list(x[0]) for x in v]
    if full or n <= ARRAY_PREVIEW:
        return items
    return {"type": f"array[{f.elem_type.name if f.elem_type else None}]", "length": n, "head": items[:ARRAY_PREVIEW]}


def _flavor(reader: GGUFReader, t, strict: bool | None) -> dict[str, Any]:
    """The flavor decision for a weight-like tensor (None for norms and 1-D tensors)."""
    from bitnet.quant.flavor import candidates, detect_flavor

    if len(t.shape) != 2 or not candidates(t.type_id, t.shape, t.type_name if t.ggml_type else None):
        return {"flavor": None}
    span = np.frombuffer(reader._buf, np.uint8, t.span, t.data_offset)
    d = detect_flavor(t, alignment=reader.alignment, raw=span, strict=strict)
    return {"flavor": d.flavor, "flavor_exact": d.exact, "flavor_deviation": d.deviation}


def describe(reader: GGUFReader, full_arrays: bool = False, strict: bool | None = None) -> dict[str, Any]:
    """The JSON document `inspect --json` prints (also used by tests and other commands)."""
    return {
        "path": reader.path,
        "version": reader.version,
        "alignment": reader.alignment,
        "file_bytes": reader.file_size,
        "data_offset": reader.data_start,
        "metadata": {
            k: {"type": f.type.name if f.elem_type is None else f"ARRAY[{f.elem_type.name}]",
                "value": _value_summary(f, full_arrays)}
            for k, f in reader.fields.items()
        },
        "tensors": [
            {
                "name": t.name,
                "shape": list(t.shape),
                "type": t.type_name,
                "type_id": t.type_id,
                "bytes": t.nbytes,
                "offset": t.data_offset,
                **_flavor(reader, t, strict),
            }
            for t in reader.tensors
        ],
    }


def run(args: argparse.Namespace, io) -> int:
    if args.demo == bool(args.model):
        print("bitnet inspect: error: give a MODEL.gguf or --demo (not both)", file=io.stderr)
        return 2
    path = args.model
    if args.demo:
        from bitnet.synth.default import default_model_path

        path = default_model_path()
    with GGUFReader(path) as reader:
        try:
            doc = describe(reader, args.full_arrays, args.strict_loader)
        except BitNetError as e:
            raise naming_file(e, path) from None
    if args.json:
        json.dump(doc, io.stdout, indent=2, default=str)
        io.stdout.write("\n")
        return 0
    _print_rich(doc, io)
    return 0


def _short(v: Any) -> str:
    if isinstance(v, dict) and "length" in v:
        head = ", ".join(repr(x) for x in v["head"])
        return f"{v['type']} x{v['length']}: [{head}, ...]"
    s = repr(v) if not isinstance(v, str) else v
    return s if len(s) <= 100 else s[:97] + "..."


def _print_rich(doc: dict[str, Any], io) -> None:
    from rich.table import Table

    # every name, key and value below comes from the file: escaped (`[/INST]` in a chat template
    # is text, not markup) and made printable (no terminal escapes, no lone surrogates)
    out = console(io.stdout)
    out.print(f"[bold]{markup_safe(doc['path'])}[/bold]  GGUF v{doc['version']}  {doc['file_bytes']:,} bytes  "
                  f"alignment {doc['alignment']}  data at {doc['data_offset']}")
    meta = Table(title=f"metadata ({len(doc['metadata'])} keys)", show_lines=False)
    meta.add_column("key", style="cyan", no_wrap=True)
    meta.add_column("type")
    meta.add_column("value", overflow="fold")
    for k, m in doc["metadata"].items():
        meta.add_row(markup_safe(k), markup_safe(m["type"]), markup_safe(_short(m["value"])))
    out.print(meta)
    tens = Table(title=f"tensors ({len(doc['tensors'])})")
    cols: tuple[tuple[str, Literal["left", "right"]], ...] = (
        ("name", "left"), ("shape", "left"), ("type", "left"), ("flavor", "left"), ("bytes", "right"), ("offset", "right"))
    for col, just in cols:
        tens.add_column(col, justify=just, no_wrap=True)
    for t in doc["tensors"]:
        flavor = t["flavor"] or ""
        if t["flavor"] and not t["flavor_exact"]:
            flavor += f" (~{t['flavor_deviation'] * 100:+.3f}%)"
        tens.add_row(markup_safe(t["name"]), "x".join(map(str, t["shape"])), markup_safe(t["type"]), flavor,
                     f"{t['bytes']:,}", f"{t['offset']:,}")
    out.print(tens)
    total = sum(t["bytes"] for t in doc["tensors"])
    out.print(f"total tensor bytes: {total:,}")
