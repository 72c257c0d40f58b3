"""HF checkpoint -> GGUF (`bitnet convert`): a `BitNetForCausalLM` directory (config.json,
safetensors, tokenizer.json) becomes a GGUF in any of the harness's weight formats, tensor for
tensor the bytes the upstream converters write (bitnet.cpp's `convert-hf-to-gguf-bitnet.py` for
I2_S/TL1/TL2, llama.cpp's `convert_hf_to_gguf.py` for TQ1_0/TQ2_0/F16), streamed one tensor at
a time from the safetensors mmap.
"""

from bitnet.convert.convert import TYPES, ConvertResult, convert
from bitnet.convert.errors import CheckpointError

__all__ = ["TYPES", "CheckpointError", "ConvertResult", "convert"]
