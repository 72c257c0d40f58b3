"""The BitNet b1.58 model: config from GGUF keys, numerics profiles, KV cache, forward pass."""

from bitnet.model.bitnet_model import BitNetModel
from bitnet.model.config import ModelConfig, read_config
from bitnet.model.kv_cache import KVCache, KVCacheWarning
from bitnet.model.profiles import PROFILES, NumericsProfile, get_profile

__all__ = ["PROFILES", "BitNetModel", "KVCache", "KVCacheWarning", "ModelConfig", "NumericsProfile", "get_profile", "read_config"]
