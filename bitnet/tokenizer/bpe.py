"""Byte-level BPE over one pre-token piece, as llama.cpp's `llm_tokenizer_bpe_session`.

Why it looks like this: llama.cpp maps the piece's UTF-8 bytes through GPT-2's byte-to-unicode
table, starts from one symbol per mapped character, and repeatedly merges the adjacent pair with
the lowest merge rank (leftmost first on equal ranks: its priority queue orders by rank, then
by the left symbol's position). With `ignore_merges` (the LLaMA-3 family) a piece that is itself
a token is taken whole, before any merging. A final symbol that is not a token falls back to its
bytes looked up one by one as one-byte strings: only ASCII bytes can match there, the others are
dropped -- a llama.cpp quirk kept on purpose (it never triggers for complete GPT-2-style vocabs).

Results are cached per piece: natural text repeats its words, so most pieces are dictionary
hits and the merge loop only runs for new ones.
"""

from __future__ import annotations

import heapq
from functools import lru_cache


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (as in llama.cpp's unicode.cpp)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


#: piece -> ids; bounded so that a long-running process cannot grow it without limit
CACHE_LIMIT = 262_144


class BPE:
    """Merges for one vocabulary; `encode_piece(piece)` -> token ids."""

    def __init__(self, token_to_id: dict[str, int], merges: dict[tuple[str, str], int], ignore_merges: bool):
        self.token_to_id = token_to_id
        self.merges = merges
        self.ignore_merges = ignore_merges
        b2u = bytes_to_unicode()
        # bytes.translate can't map to str; a latin-1 decode then str.translate can
        self._byte_map = {b: b2u[b] for b in range(256)}
        self.cache: dict[str, list[int]] = {}

    def encode_piece(self, piece: str) -> list[int]:
        """Token ids for one pre-token piece (cached)."""
        ids = self.cache.get(piece)
        if ids is None:
            mapped = piece.encode("utf-8", "surrogatepass").decode("latin-1").translate(self._byte_map)
            ids = self.merge(mapped)
            if len(self.cache) >= CACHE_LIMIT:
                self.cache.clear()
            self.cache[piece] = ids
        return ids

    def merge(self, word: str) -> list[int]:
        """The BPE merge loop on an already byte-mapped word."""
        t2i, merges = self.token_to_id, self.merges
        if self.ignore_merges:
            tid = t2i.get(word)
            if tid is not None:
                return [tid]
        n = len(word)
        if n == 1:
            syms = [word]
        else:
            syms = list(word)
            prev = list(range(-1, n - 1))
            nxt = list(range(1, n + 1))
            nxt[-1] = -1
            heap: list[tuple[int, int, int, str]] = []
            for i in range(1, n):
                rank = merges.get((syms[i - 1], syms[i]))
                if rank is not None:
                    heap.append((rank, i - 1, i, syms[i - 1] + syms[i]))
            heapq.heapify(heap)
            while heap:
                _, left, right, text = heapq.heappop(heap)
                sl, sr = syms[left], syms[right]
                # stale entry: one side has merged since (llama.cpp compares the texts too)
                if not sl or not sr or nxt[left] != right or sl + sr != text:
                    continue
                syms[left] = text
                syms[right] = ""
                nr = nxt[right]
                nxt[left] = nr
                if nr >= 0:
                    prev[nr] = left
                pl = prev[left]
                if pl >= 0:
                    rank = merges.get((syms[pl], text))
                    if rank is not None:
                        heapq.heappush(heap, (rank, pl, left, syms[pl] + text))
                if nr >= 0:
                    rank = merges.get((text, syms[nr]))
                    if rank is not None:
                        heapq.heappush(heap, (rank, left, nr, text + syms[nr]))
        out: list[int] = []
        for s in syms:
            if not s:
                continue
            tid = t2i.get(s)
            if tid is not None:
                out.append(tid)
                continue
            for b in s.encode("utf-8"):
                tid = t2i.get(chr(b)) if b < 0x80 else None
                if tid is not None:
                    out.append(tid)
        return out
