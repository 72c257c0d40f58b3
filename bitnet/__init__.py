"""bitnet-harness: a reference implementation and test harness for BitNet b1.58 inference."""

__version__ = "0.1.0"
