"""Read a GGUF's `tokenizer.ggml.*` metadata into a `Vocab`, the way llama.cpp's
`llama_vocab::impl::load` (src/llama-vocab.cpp, llama-cpp-python 0.3.36) does.

Why each rule is here (all checked against libllama by tests/test_tokenizer_crossval.py and the
fuzzing described in docs/reference/tokenizers.md):

- special ids default per model type (SPM: BOS 1, EOS 2; BPE: 11/11) and an id outside the
  vocabulary is ignored, as llama.cpp does;
- `add_bos` defaults to true for SPM and the LLaMA-3 pre-tokenizer family, else false;
- EOT is found by its text when the file has no `eot_token_id` ("<|eot_id|>", "<|im_end|>", ...),
  and llama.cpp *retypes* every end-of-generation-looking token as CONTROL. That retyping changes
  tokenization (a CONTROL token only splits the text with parse_special) and decoding (it renders
  as nothing unless asked), so it is mirrored here;
- phi-3 models strip whitespace to the right of their special tokens (`LLAMA_TOKEN_ATTR_RSTRIP`,
  chosen by `general.name`), jina/nomic `<mask>` to the left.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from bitnet.errors import TokenizerError, naming_file
from bitnet.gguf.constants import ValueType
from bitnet.gguf.reader import Field, GGUFReader
from bitnet.tokenizer.pretokenize import ADD_BOS_BY_DEFAULT, CLEAN_SPACES_OFF, PRE_TYPES

log = logging.getLogger("bitnet.tokenizer")

#: `tokenizer.ggml.token_type` values (llama_token_type)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

#: texts llama.cpp takes for EOT when the file names none, in the order tried here. (llama.cpp
#: walks an unordered_map, so with several candidates its pick is unspecified; for LLaMA-3 it
#: picks <|eot_id|>, the first entry.)
EOT_TEXTS = ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>",
             "<EOT>", "_<EOT>", "[EOT]", "<\uff5cend\u2581of\u2581sentence\uff5c>", "<end_of_utterance>")
#: texts llama.cpp treats as end-of-generation (`special_eog_ids`) and retypes as CONTROL
EOG_TEXTS = frozenset({
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
    "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
    "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
    "<\uff5cend\u2581of\u2581sentence\uff5c>", "[e~[",
})
#: fill-in-the-middle tokens llama.cpp finds by text (and retypes as CONTROL); the PAD, REPO and
#: SEP ones also end generation
FIM_TEXTS = {
    "fim_pre": ("<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<\uff5cfim\u2581begin\uff5c>", "<PRE>",
                "\u2581<PRE>", "<|code_prefix|>", "<|prefix|>"),
    "fim_suf": ("<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<\uff5cfim\u2581hole\uff5c>", "<SUF>",
                "\u2581<SUF>", "<|code_suffix|>", "<|suffix|>"),
    "fim_mid": ("<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<\uff5cfim\u2581end\uff5c>", "<MID>",
                "\u2581<MID>", "<|code_middle|>", "<|middle|>"),
    "fim_pad": ("<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"),
    "fim_rep": ("<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"),
    "fim_sep": ("<|file_sep|>",),
}
_FIM_DEPRECATED = {"fim_pre": "prefix_token_id", "fim_suf": "suffix_token_id", "fim_mid": "middle_token_id"}
#: gpt-oss tokens llama.cpp always renders (retyped USER_DEFINED)
ALWAYS_RENDERED = ("<|channel|>", "<|message|>", "<|start|>", "<|constrain|>")


@dataclass
class Vocab:
    """Everything encode/decode need, with llama.cpp's load-time adjustments applied."""

    model: str  # "gpt2" (byte-level BPE) or "llama" (SentencePiece)
    tokens: list[str]
    types: list[int]  # effective types, after llama.cpp's retyping
    scores: list[float] | None
    merges: dict[tuple[str, str], int]
    bos_id: int | None
    eos_id: int | None
    eot_id: int | None
    eom_id: int | None
    add_bos: bool
    add_eos: bool
    add_space_prefix: bool
    clean_spaces: bool  # llama_detokenize's space clean-up (BPE unless the pre-tokenizer turns it off)
    pre: str | None
    pre_family: str | None  # key of pretokenize.PATTERNS (BPE only)
    ignore_merges: bool
    n_vocab: int  # the model's embedding rows (>= len(tokens))
    eog_ids: frozenset[int] = frozenset()
    lstrip: frozenset[int] = frozenset()
    rstrip: frozenset[int] = frozenset()
    token_to_id: dict[str, int] = field(init=False, repr=False)
    specials: list[int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # llama.cpp's token_to_id is a map: with duplicate texts the last id wins
        self.token_to_id = {t: i for i, t in enumerate(self.tokens)}
        specials = [i for i, ty in enumerate(self.types)
                    if ty in (CONTROL, USER_DEFINED, UNKNOWN) and self.tokens[i]]
        # longest (in UTF-8 bytes) first, as llama.cpp sorts cache_special_tokens
        self.specials = sorted(specials, key=lambda i: -len(self.tokens[i].encode("utf-8", "surrogatepass")))


_INT_TYPES = frozenset({ValueType.UINT8, ValueType.INT8, ValueType.UINT16, ValueType.INT16, ValueType.UINT32,
                        ValueType.INT32, ValueType.UINT64, ValueType.INT64})
_NUM_TYPES = _INT_TYPES | {ValueType.FLOAT32, ValueType.FLOAT64}
#: most tokens a vocabulary may hold (the largest published ones have ~260k)
MAX_TOKENS = 2**24


def _field(r: GGUFReader, key: str, want: str) -> Field | None:
    """The field `key`, checked to hold `want`: "str", "int", "bool", or "array[str|int|num]"."""
    f = r.fields.get(key)
    if f is None:
        return None
    t, et = f.type, f.elem_type
    ok = {
        "str": t == ValueType.STRING,
        "int": t in _INT_TYPES,
        "bool": t == ValueType.BOOL or t in _INT_TYPES,
        "array[str]": t == ValueType.ARRAY and et == ValueType.STRING,
        "array[int]": t == ValueType.ARRAY and et in _INT_TYPES,
        "array[num]": t == ValueType.ARRAY and et in _NUM_TYPES,
    }[want]
    if not ok:
        found = t.name if et is None else f"ARRAY[{et.name}]"
        raise TokenizerError(f"{r.path}: {key} must be {want}, found {found}")
    return f


def _get(r: GGUFReader, key: str, want: str):
    f = _field(r, key, want)
    return None if f is None else f.value


def _model(r: GGUFReader) -> str:
    model = _get(r, "tokenizer.ggml.model", "str")
    if model is None:
        raise TokenizerError(f"{r.path}: no tokenizer.ggml.model key: the file carries no tokenizer")
    if model not in ("gpt2", "llama"):
        raise TokenizerError(f"{r.path}: tokenizer model {model[:60]!r} is not supported (gpt2, llama)")
    return model


def _tokens(r: GGUFReader) -> list[str]:
    v = _get(r, "tokenizer.ggml.tokens", "array[str]")
    if v is None:
        raise TokenizerError(f"{r.path}: no tokenizer.ggml.tokens")
    if not 1 <= len(v) <= MAX_TOKENS:
        raise TokenizerError(f"{r.path}: tokenizer.ggml.tokens has {len(v)} tokens, expected 1..{MAX_TOKENS}")
    return list(v)


def _types(r: GGUFReader, n: int) -> list[int]:
    v = _get(r, "tokenizer.ggml.token_type", "array[int]")
    if v is None:
        return [NORMAL] * n
    if len(v) != n:
        raise TokenizerError(f"{r.path}: {len(v)} token types for {n} tokens")
    return [int(t) for t in v]


def _scores(r: GGUFReader, n: int, spm: bool) -> list[float] | None:
    v = _get(r, "tokenizer.ggml.scores", "array[num]")
    if v is None:
        if spm:
            raise TokenizerError(f"{r.path}: a llama (SentencePiece) tokenizer needs tokenizer.ggml.scores")
        return None
    if len(v) != n:
        if spm:
            raise TokenizerError(f"{r.path}: {len(v)} scores for {n} tokens")
        return None  # BPE never reads scores
    arr = np.asarray(v, np.float64)
    if np.isnan(arr).any():
        raise TokenizerError(f"{r.path}: tokenizer.ggml.scores[{int(np.flatnonzero(np.isnan(arr))[0])}] is NaN")
    return arr.tolist()


def _merges(r: GGUFReader) -> dict[tuple[str, str], int]:
    raw = _get(r, "tokenizer.ggml.merges", "array[str]")
    if raw is None:
        raise TokenizerError(f"{r.path}: a gpt2 (BPE) tokenizer needs tokenizer.ggml.merges")
    merges: dict[tuple[str, str], int] = {}
    for rank, m in enumerate(raw):
        pos = m.find(" ", 1)  # as llama.cpp: the separator is the first space after position 0
        if pos > 0:
            merges[(m[:pos], m[pos + 1:])] = rank
    return merges


def _n_vocab(r: GGUFReader, n: int) -> int:
    """The model's embedding rows (>= the token count): vocab_size key or token_embd rows."""
    n_vocab = n
    arch = r.get("general.architecture")
    if isinstance(arch, str):
        vs = _get(r, f"{arch}.vocab_size", "int")
        if vs is not None:
            if not 0 <= vs <= MAX_TOKENS:
                raise TokenizerError(f"{r.path}: {arch}.vocab_size {vs} is outside 0..{MAX_TOKENS}")
            n_vocab = max(n, int(vs))
    emb = next((t for t in r.tensors if t.name == "token_embd.weight"), None)
    if emb is not None and len(emb.shape) == 2 and emb.shape[1] <= MAX_TOKENS:
        n_vocab = max(n_vocab, int(emb.shape[1]))
    return n_vocab


def _special_id(r: GGUFReader, key: str, n: int, default: int | None) -> int | None:
    if default is not None and default >= n:
        default = None  # "default special token out of vocab range, disabling"
    v = _get(r, f"tokenizer.ggml.{key}", "int")
    if v is None:
        return default
    return v if 0 <= v < n else default


def _flag(r: GGUFReader, key: str) -> bool | None:
    v = _get(r, f"tokenizer.ggml.{key}", "bool")
    return None if v is None else bool(v)


def _pre_tokenizer(pre: str | None, model: str) -> tuple[str | None, bool]:
    if model != "gpt2":
        return None, False
    if pre is None:
        log.warning("tokenizer.ggml.pre is missing: using llama.cpp's 'default' pre-tokenizer, "
                    "as llama.cpp and bitnet.cpp do for such files (llama.cpp warns that "
                    "generation quality may be degraded)")
        pre = "default"
    if pre not in PRE_TYPES:
        raise TokenizerError(f"pre-tokenizer {pre!r} is not supported; supported: {', '.join(sorted(PRE_TYPES))}")
    return PRE_TYPES[pre]


def _fim_ids(r: GGUFReader, n: int, token_to_id: dict[str, int], types: list[int]) -> dict[str, int | None]:
    """Fill-in-the-middle ids, by key or (retyped CONTROL) by text."""
    fim: dict[str, int | None] = {}
    for kind, texts in FIM_TEXTS.items():
        tid = _special_id(r, f"{kind}_token_id", n, None)
        if tid is None and kind in _FIM_DEPRECATED:
            tid = _special_id(r, _FIM_DEPRECATED[kind], n, None)
        if tid is None:
            tid = next((token_to_id[t] for t in texts if t in token_to_id), None)
            if tid is not None:
                types[tid] = CONTROL
        fim[kind] = tid
    return fim


def _strip_sets(r: GGUFReader, pre: str | None, tokens: list[str], types: list[int],
                token_to_id: dict[str, int]) -> tuple[set[int], set[int]]:
    """(lstrip, rstrip) token ids, chosen by model name / pre-tokenizer as llama.cpp does."""
    name = (_get(r, "general.name", "str") or "").lower()
    arch = r.get("general.architecture")
    arch = arch if isinstance(arch, str) else ""
    rstrip: set[int] = set()
    lstrip: set[int] = set()
    if any(s in (pre or "") for s in ("jina-v2-de", "jina-v2-es", "jina-v2-code")) or \
            any(s in arch for s in ("nomic-bert-moe", "jina-bert-v3")):
        if "<mask>" in token_to_id:
            lstrip.add(token_to_id["<mask>"])
    elif "phi-3" in name or "phi3" in name:
        rstrip = {i for i, ty in enumerate(types) if ty in (CONTROL, USER_DEFINED, UNKNOWN) and tokens[i]}
        rstrip |= {token_to_id[t] for t in ("</s>",) if t in token_to_id}
        rstrip -= {token_to_id[t] for t in ("<unk>", "<s>", "<|endoftext|>") if t in token_to_id}
    elif "modern-bert" in name and "[MASK]" in token_to_id:
        lstrip.add(token_to_id["[MASK]"])
    return lstrip, rstrip


def read_vocab(r: GGUFReader) -> Vocab:
    """A `Vocab` from an open reader; `TokenizerError` (naming the file) when the metadata
    cannot make one.

    Every key is type-checked as it is read (`_field`): a file whose `tokens` is an integer or
    whose `bos_token_id` is a string is refused naming the key, never a TypeError later."""
    try:
        return _build_vocab(r)
    except TokenizerError as e:
        raise naming_file(e, r.path) from None


def _build_vocab(r: GGUFReader) -> Vocab:
    model = _model(r)
    spm = model == "llama"
    tokens = _tokens(r)
    n = len(tokens)
    types = _types(r, n)
    scores = _scores(r, n, spm)
    merges = {} if spm else _merges(r)
    pre = _get(r, "tokenizer.ggml.pre", "str")
    pre_family, ignore_merges = _pre_tokenizer(pre, model)
    n_vocab = _n_vocab(r, n)

    token_to_id = {t: i for i, t in enumerate(tokens)}
    eot_id = _special_id(r, "eot_token_id", n, None)
    if eot_id is None:
        eot_id = next((token_to_id[t] for t in EOT_TEXTS if t in token_to_id), None)
    eom_id = _special_id(r, "eom_token_id", n, None)
    if eom_id is None:
        eom_id = token_to_id.get("<|eom_id|>")
    fim = _fim_ids(r, n, token_to_id, types)
    eog = {tid for k in ("fim_pad", "fim_rep", "fim_sep") if (tid := fim[k]) is not None}
    eog |= {token_to_id[t] for t in EOG_TEXTS if t in token_to_id}
    eog |= {tid for tid in (eot_id, eom_id) if tid is not None}
    for tid in eog:  # "control-looking token ... its type will be overridden"
        types[tid] = CONTROL
    for t in ALWAYS_RENDERED:
        if t in token_to_id:
            types[token_to_id[t]] = USER_DEFINED

    bos_id = _special_id(r, "bos_token_id", n, 1 if spm else 11)
    eos_id = _special_id(r, "eos_token_id", n, 2 if spm else 11)
    if eos_id is not None:
        eog.add(eos_id)
    add_bos, add_eos, asp = _flag(r, "add_bos_token"), _flag(r, "add_eos_token"), _flag(r, "add_space_prefix")
    lstrip, rstrip = _strip_sets(r, pre, tokens, types, token_to_id)
    return Vocab(
        model=model, tokens=tokens, types=types, scores=scores, merges=merges,
        bos_id=bos_id, eos_id=eos_id, eot_id=eot_id, eom_id=eom_id,
        add_bos=add_bos if add_bos is not None else (spm or pre in ADD_BOS_BY_DEFAULT),
        add_eos=add_eos if add_eos is not None else False,
        add_space_prefix=(asp if asp is not None else True) if spm else False,
        clean_spaces=not spm and (pre or "default") not in CLEAN_SPACES_OFF,
        pre=pre, pre_family=pre_family, ignore_merges=ignore_merges, n_vocab=n_vocab,
        eog_ids=frozenset(eog), lstrip=frozenset(lstrip), rstrip=frozenset(rstrip),
    )
