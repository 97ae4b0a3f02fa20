"""The recurrence memory after a token prefix, so a prompt that repeats an earlier one skips it.

Chat clients resend the whole conversation with every turn, and many requests share a system
prompt. `prefill` reads a prompt in segments of `seq_len` tokens starting at token 0, so the
memory after the first k·seq_len tokens depends on those tokens alone: it can be stored under a
hash of their ids and resumed from, giving what a cold run gives. A follow-up turn then runs
only the tokens after the earlier prompt's last boundary.

Entries hold the per-layer memory (window - 1 positions at most) and the last logits, cloned on
the way in and out so no caller can change them; the cache is bounded by their bytes and evicts
the least recently used. One cache belongs to one model: the key is the token ids alone. Not
thread-safe: one generation batch (one thread at a time) uses it.
"""

from __future__ import annotations

import hashlib
from collections import Counter, OrderedDict
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from torch import Tensor

from lmforge.model.generate import prefill_segments
from lmforge.model.xl import Transformer

DIGEST_BYTES = 16


class Prefix(NamedTuple):
    """What a prompt's first `length` tokens leave behind."""

    length: int
    mems: list[Tensor]
    """Per layer [1, <= window - 1, D]: the memory after the prefix."""
    logits: Tensor
    """[V]: the logits of the prefix's last token."""


class PrefixCache:
    """Memory after token prefixes, least recently used evicted first once over `max_bytes`."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[tuple[int, bytes], Prefix] = OrderedDict()
        self._lengths: Counter[int] = Counter()  # prefix lengths stored, with their entry counts

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, tokens: Sequence[int]) -> Prefix | None:
        """The longest stored prefix of `tokens` (a copy), or None."""
        lengths = sorted(n for n in self._lengths if n <= len(tokens))
        for key in reversed(_keys(tokens, lengths)):
            if key in self._entries:
                self.hits += 1
                self._entries.move_to_end(key)
                return _copy(self._entries[key])
        self.misses += 1
        return None

    def store(self, tokens: Sequence[int], mems: list[Tensor], logits: Tensor) -> None:
        """Keep a copy of the memory and last logits after `tokens` (a whole prompt prefix)."""
        key = _keys(tokens, [len(tokens)])[0]
        if key in self._entries:
            self._entries.move_to_end(key)
            return
        entry = _copy(Prefix(len(tokens), mems, logits))
        size = _size(entry)
        if size > self.max_bytes:
            return
        self._entries[key] = entry
        self._lengths[entry.length] += 1
        self.nbytes += size
        while self.nbytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.nbytes -= _size(evicted)
            self._lengths[evicted.length] -= 1
            if not self._lengths[evicted.length]:
                del self._lengths[evicted.length]


def prefill_cached(model: Transformer, tokens: list[int],
                   cache: PrefixCache | None) -> tuple[list[Tensor], Tensor]:
    """`prefill` that resumes from the longest cached prefix of `tokens` and stores the memory at
    every segment boundary it passes; the same result as a cold `prefill(model, tokens)`."""
    if not tokens:
        raise ValueError("prefill needs a non-empty prompt")
    found = cache.lookup(tokens) if cache is not None else None
    if found is not None and found.length == len(tokens):
        return found.mems, found.logits
    start, resume = (found.length, found.mems) if found is not None else (0, None)
    for end, mems, logits in prefill_segments(model, tokens, resume, start):
        if cache is not None and end % model.config.seq_len == 0:
            cache.store(tokens[:end], mems, logits)
    return mems, logits


def _keys(tokens: Sequence[int], lengths: list[int]) -> list[tuple[int, bytes]]:
    """(length, hash of the int64 ids of tokens[:length]) for each of the ascending `lengths`, hashing
    `tokens` once: a prefix's digest is the running digest at its length."""
    ids = np.asarray(tokens, dtype=np.int64)
    running = hashlib.blake2b(digest_size=DIGEST_BYTES)
    keys, done = [], 0
    for n in lengths:
        running.update(ids[done:n].tobytes())
        done = n
        keys.append((n, running.copy().digest()))
    return keys


def _copy(prefix: Prefix) -> Prefix:
    return Prefix(prefix.length, [m.detach().clone() for m in prefix.mems], prefix.logits.detach().clone())


def _size(prefix: Prefix) -> int:
    return sum(t.numel() * t.element_size() for t in [*prefix.mems, prefix.logits])
