"""Tokenizers from GGUF metadata that match llama.cpp token for token."""

from bitnet.tokenizer.tokenizer import Tokenizer, TokenizerError, Vocab, load_tokenizer, read_vocab

__all__ = ["Tokenizer", "TokenizerError", "Vocab", "load_tokenizer", "read_vocab"]
