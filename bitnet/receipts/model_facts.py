"""Facts about a model file that a receipt's figures must agree with, recomputed from the file."""

from __future__ import annotations

from collections import Counter
from pathlib import Path


def model_facts(path: str | Path, profile: str | None, apply_corrections: bool = False) -> dict | str:
    """A dict of facts, or a str saying why the file does not load under `profile` (with the
    validation corrections applied when the receipt records that the run applied them)."""
    from bitnet.errors import BitNetError
    from bitnet.model.bitnet_model import BitNetModel

    try:
        model = BitNetModel(path, profile=profile, apply_corrections=apply_corrections)
    except BitNetError as e:
        return f"the model file does not load under profile {profile!r}: {e}"
    return facts_of_model(model)


def facts_of_model(model) -> dict:
    """The facts of a loaded `BitNetModel`."""
    proj = [w for layer in model.layers for w in layer.proj.values()]
    emb = model.tok_embd
    return {
        "architecture": model.config.arch,
        "formats": dict(Counter(w.flavor for w in proj)),
        "weight_bytes_per_token": model.bytes_per_token,
        "projection_bytes": int(sum(w.nbytes for w in proj)),
        "context_length": int(model.config.n_ctx),
        "vocab_size": int(model.config.n_vocab),
        "lm_head_bytes": int(model.lm_head_matrix.nbytes),
        "embedding_row_bytes": int(emb.shape[1] * emb.itemsize),
    }
