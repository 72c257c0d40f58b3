"""The generation engine: prefill the whole prompt in one batch, then decode token by token
through the KV cache, timing each phase with a monotonic clock for receipts."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bitnet.engine.sampling import SamplerConfig, sample
from bitnet.errors import BitNetError, ConfigError, NonFiniteLogitsError, naming_file
from bitnet.model.bitnet_model import BitNetModel

CHAT_TEMPLATE_2B4T = "System: {system}<|eot_id|>User: {user}<|eot_id|>Assistant: "
DEFAULT_SYSTEM = "You are a helpful assistant."


def env_seed() -> int | None:
    """`BITNET_SEED`, else 0 when `BITNET_DETERMINISTIC=1`, else None (fresh entropy)."""
    from bitnet.settings import settings

    s = settings()
    if s.seed is not None:
        return s.seed
    return 0 if s.deterministic else None


def deterministic_env() -> bool:
    from bitnet.settings import settings

    return settings().deterministic


@dataclass
class Timings:
    load_s: float = 0.0
    tokenize_s: float = 0.0
    prefill_s: float = 0.0
    decode_step_s: list[float] = field(default_factory=list)
    total_s: float = 0.0
    # CPU seconds of the calling thread per phase (time.thread_time): what load cannot inflate,
    # so re-run attestation can compare runs made under different load (bitnet.receipts.rerun)
    prefill_cpu_s: float = 0.0
    decode_step_cpu_s: list[float] = field(default_factory=list)

    @property
    def decode_s(self) -> float:
        return float(sum(self.decode_step_s))

    def to_dict(self) -> dict:
        return {"load_s": self.load_s, "tokenize_s": self.tokenize_s, "prefill_s": self.prefill_s,
                "decode_s": self.decode_s, "decode_step_s": list(self.decode_step_s), "total_s": self.total_s}


@dataclass
class GenerationResult:
    prompt_ids: list[int]
    ids: list[int]  # generated ids (the stop token included when one ended the run)
    text: str
    stop_reason: str  # "eog", "stop_string", "max_tokens", "context"
    timings: Timings
    seed: int | None
    sampler: dict
    profile: str
    prompt_logits: np.ndarray | None = None  # [T_prompt, V] when requested

    def to_json(self) -> dict:
        return {"prompt_ids": self.prompt_ids, "ids": self.ids, "text": self.text,
                "stop_reason": self.stop_reason, "timings": self.timings.to_dict(),
                "seed": self.seed, "sampler": self.sampler, "profile": self.profile}


class Engine:
    """A loaded model (and its tokenizer, when the file has one) ready to generate."""

    def __init__(self, model_path: str | os.PathLike[str], *, profile: str | None = None,
                 strict: bool | None = None, max_ctx: int | None = None, apply_corrections: bool = False,
                 validate: bool = True, weights: str | None = None):
        t0 = time.perf_counter()
        try:
            self.model = BitNetModel(model_path, profile=profile, strict=strict, apply_corrections=apply_corrections,
                                     validate=validate, weights=weights)
        except BitNetError as e:  # a format/flavor error about a tensor: say which file
            raise naming_file(e, model_path) from None
        self.path = Path(model_path)
        self.max_ctx = max_ctx or self.model.config.n_ctx
        self._tokenizer = None
        self._eog: set[int] | None = None  # computed once: scanning a 128k vocabulary per call is waste
        self.load_s = time.perf_counter() - t0

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from bitnet.tokenizer import load_tokenizer

            self._tokenizer = load_tokenizer(self.model.reader)
        return self._tokenizer

    def encode(self, text: str, add_special: bool = True, parse_special: bool = True) -> list[int]:
        return self.tokenizer.encode(text, add_special=add_special, parse_special=parse_special)

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """Logits for every position of `ids` (fresh cache, one batch): [T, n_vocab]."""
        if not ids:
            raise ConfigError("logits of an empty token sequence")
        if len(ids) > self.max_ctx:
            raise ConfigError(f"{len(ids)} tokens do not fit the context of {self.max_ctx}")
        cache = self.model.new_cache(self.max_ctx)  # zeros are lazily committed: no cost until used
        return self.model.forward(np.asarray(ids, np.int64), cache, 0, all_logits=True)

    def generate(
        self,
        prompt: str | Sequence[int],
        *,
        max_tokens: int = 32,
        sampler: SamplerConfig | None = None,
        seed: int | None = None,
        stop: Sequence[str] = (),
        add_special: bool = True,
        return_prompt_logits: bool = False,
        on_token: Callable[[int, str], None] | None = None,
        ignore_eog: bool = False,
        on_decode_start: Callable[[], object] | None = None,
    ) -> GenerationResult:
        """Prefill, then sample up to max_tokens. Every sampled token that does not end the run
        is evaluated (one timed decode step per token, as llama.cpp's generation loop does), so
        a benchmark with ignore_eog=True times exactly max_tokens steps."""
        if max_tokens < 0:
            raise ConfigError(f"max_tokens must be >= 0, got {max_tokens}")
        sampler = sampler or SamplerConfig()
        seed = seed if seed is not None else env_seed()
        rng = np.random.default_rng(seed)
        timings = Timings(load_s=self.load_s)
        t_start = time.perf_counter()
        if isinstance(prompt, str):
            t0 = time.perf_counter()
            prompt_ids = self.encode(prompt, add_special=add_special)
            timings.tokenize_s = time.perf_counter() - t0
        else:
            prompt_ids = [int(i) for i in prompt]
        if not prompt_ids:
            raise ConfigError("the prompt tokenized to zero tokens; add text or --add-special")
        if len(prompt_ids) >= self.max_ctx:
            raise ConfigError(f"prompt of {len(prompt_ids)} tokens does not fit the context of {self.max_ctx}")
        eog = self._eog_ids()
        cache = self.model.new_cache(self.max_ctx)

        t0, c0 = time.perf_counter(), time.thread_time()
        logits = self.model.forward(np.asarray(prompt_ids, np.int64), cache, 0, all_logits=return_prompt_logits)
        timings.prefill_s = time.perf_counter() - t0
        timings.prefill_cpu_s = time.thread_time() - c0
        prompt_logits = logits if return_prompt_logits else None
        last = logits[-1]

        if on_decode_start is not None:
            on_decode_start()  # benchmarks snapshot the kernel log here: the decode phase starts
        history = list(prompt_ids)
        out: list[int] = []
        stop_reason = "max_tokens"
        text = ""
        pos = len(prompt_ids)
        for _ in range(max_tokens):
            try:
                tok = sample(last, sampler, rng, history, position=pos - 1)
            except NonFiniteLogitsError as e:
                raise naming_file(e, self.path) from None
            out.append(tok)
            history.append(tok)
            piece = self._piece(tok)
            if on_token:
                on_token(tok, piece)
            if tok in eog and not ignore_eog:
                stop_reason = "eog"
                break
            if stop:
                text = self._decode(out)
                if any(s in text for s in stop):
                    stop_reason = "stop_string"
                    break
            if pos >= self.max_ctx:
                stop_reason = "context"
                break
            t0, c0 = time.perf_counter(), time.thread_time()
            last = self.model.forward(np.asarray([tok], np.int64), cache, pos, all_logits=False)[0]
            timings.decode_step_s.append(time.perf_counter() - t0)
            timings.decode_step_cpu_s.append(time.thread_time() - c0)
            pos += 1
        text = self._decode(out)
        if stop_reason == "stop_string":
            cut = min(text.index(s) for s in stop if s in text)
            text = text[:cut]
        timings.total_s = time.perf_counter() - t_start + self.load_s
        return GenerationResult(prompt_ids, out, text, stop_reason, timings, seed, sampler.to_dict(),
                                self.model.profile.name, prompt_logits)

    # -- tokenizer helpers (the engine still runs on ids when a file has no tokenizer) ------
    def _has_tokenizer(self) -> bool:
        return "tokenizer.ggml.tokens" in self.model.reader.fields

    def _eog_ids(self) -> set[int]:
        if self._eog is None:
            self._eog = self._find_eog_ids()
        return self._eog

    def _find_eog_ids(self) -> set[int]:
        """End-of-generation ids (bitnet.tokenizer.eog): from the metadata, plus the ones the
        vocabulary marks when the file has a tokenizer."""
        from bitnet.tokenizer.eog import end_of_generation_ids

        vocab = self.tokenizer.vocab if self._has_tokenizer() else None
        return set(end_of_generation_ids(self.model.reader, vocab))

    def _piece(self, tok: int) -> str:
        return self.tokenizer.decode([tok]) if self._has_tokenizer() else ""

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids) if self._has_tokenizer() else ""
