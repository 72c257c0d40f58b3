"""End-of-generation ids: the one place that says which tokens stop generation.

llama.cpp stops on `llama_vocab_is_eog`: EOS, EOT, EOM and the tokens it finds by their text
(`special_eog_ids`, computed once at vocab load: `Vocab.eog_ids`). A file without a tokenizer
still names its EOS/EOT/EOM ids in the metadata, and those stop generation too.
"""

from __future__ import annotations

from typing import Any

from bitnet.tokenizer.load import Vocab

#: metadata keys whose ids end generation even without a tokenizer
EOG_KEYS = ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id")


def end_of_generation_ids(reader: Any, vocab: Vocab | None = None) -> frozenset[int]:
    """The metadata's EOS/EOT/EOM ids, plus every id of the vocabulary (when there is one)
    that llama.cpp treats as end of generation."""
    # only integers count: a hostile file's "" or [1, 2] here is no id (the tokenizer's loader
    # refuses such a file with a typed error when it has a tokenizer)
    ids = {int(v) for k in EOG_KEYS if isinstance(v := reader.get(k), int) and not isinstance(v, bool)}
    if vocab is not None:
        ids |= {i for i in vocab.eog_ids if 0 <= i < len(vocab.tokens)}
    return frozenset(ids)
