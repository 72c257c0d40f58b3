"""Tokenizers from GGUF metadata that match llama.cpp token for token.

`load_tokenizer(path_or_reader) -> Tokenizer`; see docs/reference/tokenizers.md.
"""

from bitnet.errors import TokenizerError
from bitnet.tokenizer.load import Vocab, read_vocab
from bitnet.tokenizer.tokenizer import Tokenizer, load_tokenizer

__all__ = ["Tokenizer", "TokenizerError", "Vocab", "load_tokenizer", "read_vocab"]
