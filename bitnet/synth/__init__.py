"""Deterministic synthetic BitNet models (`bitnet synth`): the model writer (`model`), the
built-in BPE vocabulary it embeds (`vocab`) and the project's default model (`default`)."""

from bitnet.synth.model import (
    ARCHS,
    PRESETS,
    PROJECTIONS,
    ModelShape,
    projection_shapes,
    synthesize,
    ternary_weight,
    weight_scale,
)

__all__ = ["ARCHS", "PRESETS", "PROJECTIONS", "ModelShape", "projection_shapes", "synthesize",
           "ternary_weight", "weight_scale"]
