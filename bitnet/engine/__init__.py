"""Generation: prefill + KV-cached decode, sampling, timings."""

from bitnet.engine.generate import CHAT_TEMPLATE_2B4T, Engine, GenerationResult, Timings
from bitnet.engine.sampling import SamplerConfig, sample

__all__ = ["CHAT_TEMPLATE_2B4T", "Engine", "GenerationResult", "SamplerConfig", "Timings", "sample"]
