"""GGUF container I/O: one type table, a strict zero-copy reader, a streaming writer."""

from bitnet.gguf.constants import (
    GGML_TYPES,
    GGML_TYPES_BY_NAME,
    GGMLType,
    ValueType,
    ggml_type,
)
from bitnet.gguf.reader import Field, GGUFReader, StringArray, TensorInfo
from bitnet.gguf.writer import GGUFWriter

__all__ = [
    "GGML_TYPES",
    "GGML_TYPES_BY_NAME",
    "Field",
    "GGMLType",
    "GGUFReader",
    "GGUFWriter",
    "StringArray",
    "TensorInfo",
    "ValueType",
    "ggml_type",
]
