"""SentencePiece-style tokenization (`tokenizer.ggml.model = llama`), as llama.cpp's
`llm_tokenizer_spm_session`.

Why it looks like this: symbols start as single UTF-8 characters; the adjacent pair whose
concatenation is a token with the highest score merges first (leftmost on equal scores: the
queue orders by score, then left position). Every pair pushed is recorded in `rev_merge` by its
text (a later push of the same text overwrites it, as llama.cpp's map does). A final symbol that
is not a token is re-segmented through that record into its two halves, recursively; a symbol
with no record becomes `<0xNN>` byte tokens, one per UTF-8 byte (byte fallback). The caller
escapes spaces to U+2581 and adds the leading space (`add_space_prefix`).
"""

from __future__ import annotations

import heapq

from bitnet.errors import TokenizerError


class SPM:
    """Score-based bigram merges for one vocabulary; `encode_text(escaped)` -> token ids."""

    def __init__(self, token_to_id: dict[str, int], scores: list[float]):
        self.token_to_id = token_to_id
        self.scores = scores
        self._cache: dict[str, list[int]] = {}

    def byte_token(self, b: int) -> int:
        """The `<0xNN>` token of a byte (llama.cpp's `byte_to_token`, which also accepts a
        one-character token for the byte)."""
        t2i = self.token_to_id
        tid = t2i.get(f"<0x{b:02X}>")
        if tid is None:
            tid = t2i.get(chr(b))
        if tid is None:
            raise TokenizerError(f"byte 0x{b:02X} has no <0x{b:02X}> token in this vocabulary")
        return tid

    def encode_text(self, text: str) -> list[int]:
        """Token ids for a whitespace-escaped text fragment (cached per fragment)."""
        ids = self._cache.get(text)
        if ids is None:
            ids = self._encode(text)
            if len(self._cache) >= 65_536:
                self._cache.clear()
            self._cache[text] = ids
        return ids

    def _encode(self, text: str) -> list[int]:
        t2i, scores = self.token_to_id, self.scores
        n = len(text)
        if n == 0:
            return []
        lens = [1] * n  # symbol i covers text[i:i+lens[i]] (symbols start where they started)
        prev = list(range(-1, n - 1))
        nxt = list(range(1, n + 1))
        nxt[-1] = -1
        heap: list[tuple[float, int, int, int]] = []

        def try_add(left: int, right: int) -> None:
            if left == -1 or right == -1:
                return
            size = lens[left] + lens[right]
            tid = t2i.get(text[left:left + size])
            if tid is not None:
                heapq.heappush(heap, (-scores[tid], left, right, size))

        for i in range(1, n):
            try_add(i - 1, i)
        while heap:
            _, left, right, size = heapq.heappop(heap)
            if lens[left] == 0 or lens[right] == 0 or lens[left] + lens[right] != size:
                continue  # stale: one side merged since
            lens[left] = size
            lens[right] = 0
            nxt[left] = nxt[right]
            if nxt[right] >= 0:
                prev[nxt[right]] = left
            try_add(prev[left], left)
            try_add(left, nxt[left])

        out: list[int] = []
        i = 0
        while i != -1:
            s = text[i:i + lens[i]]
            tid = t2i.get(s)
            if tid is not None:
                out.append(tid)
            else:
                out.extend(self.byte_token(b) for b in s.encode("utf-8", "surrogatepass"))
            i = nxt[i]
        return out
