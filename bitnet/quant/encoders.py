"""Weight encodings by name: how a ternary matrix times a per-tensor scale becomes tensor bytes.

The synthesiser writes every weight through this table, built from the format registry
(`bitnet.quant.formats`: each format lists its `encodings()`), so a registered format is
available to `bitnet synth --format`. An encoder never changes the math: the decoded tensor
equals `ternary * scale` up to the format's own rounding of the scale.
"""

from __future__ import annotations

from bitnet.errors import ConfigError
from bitnet.quant.formats import Encoding, all_formats


def encodings() -> dict[str, Encoding]:
    """Every encoding of every registered format, by name."""
    return {e.name: e for f in all_formats() for e in f.encodings()}


FORMATS: dict[str, Encoding] = encodings()


def weight_format(name: str) -> Encoding:
    table = encodings()
    try:
        return table[name.lower()]
    except KeyError:
        raise ConfigError(f"unknown weight format {name!r}; known: {', '.join(sorted(table))}") from None
