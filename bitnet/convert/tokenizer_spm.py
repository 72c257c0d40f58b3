"""A SentencePiece `tokenizer.model` -> `tokenizer.ggml.*` metadata, as both upstream converters'
`_set_vocab_sentencepiece` write it, without the sentencepiece package.

The file is a protobuf `ModelProto`; field 1 repeats `SentencePiece {1: piece (string),
2: score (float), 3: type (enum: 1 NORMAL, 2 UNKNOWN, 3 CONTROL, 4 USER_DEFINED, 5 UNUSED,
6 BYTE)}`. The converters keep NORMAL for user-defined pieces (they test is_unknown,
is_control, is_unused, is_byte only), append `added_tokens.json` entries not already present
(score -1000, USER_DEFINED), pad to the config's vocab_size with `[PAD<i>]` (score -1000,
UNUSED), and write model `llama`, pre `default`.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from bitnet.convert.errors import CheckpointError
from bitnet.gguf.constants import ValueType

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


def _varint(buf: bytes, i: int, where: str) -> tuple[int, int]:
    shift = value = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise CheckpointError(f"{where}: truncated or overlong varint at byte {i}")
        b = buf[i]
        value |= (b & 0x7F) << shift
        i += 1
        if not b & 0x80:
            return value, i
        shift += 7


def _fields(buf: bytes, where: str):
    """(field number, wire type, value) of one protobuf message; length-delimited values as
    bytes, fixed32 as the raw 4 bytes."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i, where)
        field, wire = key >> 3, key & 7
        if wire == 0:
            v, i = _varint(buf, i, where)
        elif wire == 1:
            v, i = buf[i:i + 8], i + 8
        elif wire == 2:
            n, i = _varint(buf, i, where)
            if i + n > len(buf):
                raise CheckpointError(f"{where}: field {field} runs past the end (byte {i} + {n})")
            v, i = buf[i:i + n], i + n
        elif wire == 5:
            v, i = buf[i:i + 4], i + 4
        else:
            raise CheckpointError(f"{where}: unsupported protobuf wire type {wire} at byte {i}")
        yield field, wire, v


def read_pieces(path: Path) -> list[tuple[str, float, int]]:
    """(piece, score, type) of every SentencePiece, in id order."""
    try:
        buf = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"{path}: {e.strerror or e}") from None
    pieces = []
    for field, wire, v in _fields(buf, str(path)):
        if field != 1 or wire != 2:
            continue
        piece, score, typ = None, 0.0, NORMAL
        for f, w, x in _fields(v, f"{path}: piece {len(pieces)}"):
            if f == 1 and w == 2:
                try:
                    piece = x.decode("utf-8")
                except UnicodeDecodeError:
                    raise CheckpointError(f"{path}: piece {len(pieces)} is not UTF-8") from None
            elif f == 2 and w == 5:
                score = struct.unpack("<f", x)[0]
            elif f == 3 and w == 0:
                typ = x
        if piece is None:
            raise CheckpointError(f"{path}: piece {len(pieces)} has no text")
        pieces.append((piece, score, typ))
    if not pieces:
        raise CheckpointError(f"{path}: no SentencePiece pieces; not a tokenizer.model")
    return pieces


def spm_metadata(model_dir: Path, vocab_size: int, special_rows) -> list:
    pieces = read_pieces(model_dir / "tokenizer.model")
    tokens = [p for p, _, _ in pieces]
    scores = [s for _, s, _ in pieces]
    types = [t if t in (UNKNOWN, CONTROL, UNUSED, BYTE) else NORMAL for _, _, t in pieces]
    added = model_dir / "added_tokens.json"
    if added.is_file():
        try:
            extra = json.loads(added.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{added}: cannot read it as JSON: {e}") from None
        for key in extra:
            if key not in tokens:
                tokens.append(key)
                scores.append(-1000.0)
                types.append(USER_DEFINED)
    if len(tokens) > vocab_size:
        raise CheckpointError(f"{model_dir / 'tokenizer.model'}: {len(tokens)} tokens, more than config.json's "
                              f"vocab_size {vocab_size}")
    for i in range(1, vocab_size - len(tokens) + 1):
        tokens.append(f"[PAD{i}]")
        scores.append(-1000.0)
        types.append(UNUSED)
    rows = [
        ("tokenizer.ggml.model", "llama", ValueType.STRING, None),
        ("tokenizer.ggml.pre", "default", ValueType.STRING, None),
        ("tokenizer.ggml.tokens", tokens, ValueType.ARRAY, ValueType.STRING),
        ("tokenizer.ggml.scores", scores, ValueType.ARRAY, ValueType.FLOAT32),
        ("tokenizer.ggml.token_type", types, ValueType.ARRAY, ValueType.INT32),
    ]
    return rows + special_rows({t: i for i, t in enumerate(tokens)})
