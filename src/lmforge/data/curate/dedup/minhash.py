"""MinHash signatures and LSH band keys: the per-shard half of near-duplicate detection.

Defaults follow FineWeb (datatrove's MinHash stage): 5-word shingles, 14 bands x 8 rows = 112
hashes, so a pair of documents with shingle Jaccard similarity s becomes a candidate with
probability 1 - (1 - s^8)^14 (50% at s = 0.685; (1/b)^(1/r) = 0.72 is the usual threshold
approximation, where the probability is already 65%). Averaged over permutation seeds, the share
of pairs these signatures find follows that curve (benchmarks/results/dedup_quality.md: 0.918 at
s = 0.8 without verification, against 0.919); one seed's share over a few hundred pairs
scatters around it by a binomial +-0.02, for datasketch's hashing as for this one.

Shingles are n-grams of `shingle_words`: the words of `lmforge.data.text` (the splitter every
step counts with, so each CJK character is a word and CJK shingles are character 5-grams), each
folded by NFKC, casefold and every digit run replaced by "0" (so dates and counters do not hide
a copy). A document shorter than `ngram` words is a single shingle of all its words. The
built-in corpus plants its near duplicates at a Jaccard similarity of these same shingles
(`shingles`), so the similarity the truth states is the one the signatures estimate.

Hashing, vectorised over a batch with numpy and deterministic across processes (no `hash()`):
- every distinct word is hashed once with BLAKE2b (64 bits);
- a shingle's hash is a polynomial of its words' hashes mod 2^64, of which the top 32 bits are kept;
- permutation k maps a 32-bit shingle hash x to (a_k * x + b_k) mod 2^64 with random 64-bit a_k, b_k.
  Its top 32 bits are Dietzfelbinger's multiply-add-shift family, strongly universal, the same
  guarantee as (a x + b) mod (2^61 - 1); unlike the Mersenne form it needs no 122-bit product,
  so it costs one multiply and one add per shingle and hash. With odd a_k it is a bijection, so
  two signature values are equal only when the same shingle is the minimum (datasketch 2.0's
  "affine" schemes use the same wrap-around affine map for the same reasons).
"""

from __future__ import annotations

import hashlib
import itertools
import re
import unicodedata
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from lmforge.data.text import words

DIGITS = re.compile(r"\d+")
POLY = np.uint64(0x9E3779B97F4A7C15)
"""Odd multiplier of the polynomial hashes (shingles from words, band keys from rows)."""
CHUNK = 2048
"""Shingles per block of the [shingles, hashes] matrix: 1.8 MB at 112 hashes, so it stays in cache."""


def shingle_words(text: str) -> list[str]:
    """The words of `text`, each folded as the module doc says: one entry per word of `words`."""
    return [fold(word) for word in words(text)]


@lru_cache(maxsize=1 << 16)
def fold(word: str) -> str:
    """NFKC, casefold, digit runs as "0". Per word, after splitting, so that folding never
    changes how many words a text has (NFKC turns the word "½" into "1⁄2", which splits in two)."""
    return DIGITS.sub("0", unicodedata.normalize("NFKC", word).casefold())


def shingles(text: str, ngram: int = 5) -> set[tuple[str, ...]]:
    """The shingle set whose Jaccard similarity MinHash signatures with this `ngram` estimate."""
    folded = shingle_words(text)
    return {tuple(folded[i:i + ngram]) for i in range(max(1, len(folded) - ngram + 1))}


def detection_probability(similarity: float | np.ndarray, bands: int, rows: int) -> float | np.ndarray:
    """Chance that a pair with this Jaccard similarity shares at least one band: 1 - (1 - s^r)^b."""
    probability = 1.0 - (1.0 - np.asarray(similarity, dtype=np.float64) ** rows) ** bands
    return float(probability) if probability.ndim == 0 else probability


def probability_curve(bands: int, rows: int,
                      points: Sequence[float] = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)) -> str:
    """A small table of the LSH S-curve, printed so users see what the chosen bands/rows catch."""
    threshold = (1.0 - 0.5 ** (1.0 / bands)) ** (1.0 / rows)  # solves 1 - (1 - s^r)^b = 1/2
    lines = [f"MinHash LSH {bands} bands x {rows} rows ({bands * rows} hashes): "
             f"P(candidate) = 1 - (1 - s^{rows})^{bands}, 50% at s = {threshold:.3f}",
             "similarity  P(candidate)"]
    lines += [f"{s:>10.2f}  {detection_probability(s, bands, rows):>12.3f}" for s in points]
    return "\n".join(lines)


class MinHasher:
    """Computes MinHash signatures and LSH band keys; equal settings give equal values anywhere."""

    def __init__(self, bands: int = 14, rows: int = 8, ngram: int = 5, seed: int = 1) -> None:
        if min(bands, rows, ngram) < 1:
            raise ValueError(f"bands, rows and ngram must be >= 1, got {bands}, {rows}, {ngram}")
        self.bands, self.rows, self.ngram, self.seed = bands, rows, ngram, seed
        rng = np.random.default_rng(seed)
        top = np.iinfo(np.uint64).max
        self.mul = rng.integers(0, top, size=bands * rows, dtype=np.uint64, endpoint=True) | np.uint64(1)
        self.add = rng.integers(0, top, size=bands * rows, dtype=np.uint64, endpoint=True)

    @property
    def num_perm(self) -> int:
        return self.bands * self.rows

    def shingles(self, text: str) -> set[tuple[str, ...]]:
        """The shingle set whose Jaccard similarity the signatures estimate."""
        return shingles(text, self.ngram)

    def signature(self, text: str) -> np.ndarray:
        """uint64[bands * rows] signature of one text."""
        return self.signatures([text])[0]

    def signatures(self, texts: Sequence[str]) -> np.ndarray:
        """uint64[len(texts), bands * rows]: per hash, the minimum over each text's shingles."""
        if not texts:
            return np.empty((0, self.num_perm), dtype=np.uint64)
        split = [words(text) for text in texts]
        lengths = np.fromiter(map(len, split), dtype=np.int64, count=len(split))
        word_hashes = np.fromiter(map(_WordHashes().__getitem__, itertools.chain.from_iterable(split)),
                                  dtype=np.uint64, count=int(lengths.sum()))
        shingle_hashes, owners = _shingle_hashes(word_hashes, lengths, self.ngram)
        return self._minimum(shingle_hashes, owners, len(texts))

    def band_keys(self, signatures: np.ndarray) -> np.ndarray:
        """uint64[n, bands]: one key per band, equal exactly when the band's rows are equal
        (up to 64-bit hash collisions), so bucketing needs one column per band, not 8."""
        rows = np.asarray(signatures, dtype=np.uint64).reshape(len(signatures), self.bands, self.rows)
        keys = rows[:, :, 0].copy()
        for r in range(1, self.rows):
            keys = keys * POLY + rows[:, :, r]
        return keys

    def _minimum(self, shingle_hashes: np.ndarray, owners: np.ndarray, n: int) -> np.ndarray:
        """Apply every permutation to every shingle block by block and keep each document's minima."""
        out = np.full((n, self.num_perm), np.iinfo(np.uint64).max, dtype=np.uint64)
        block = np.empty((CHUNK, self.num_perm), dtype=np.uint64)
        for lo in range(0, len(shingle_hashes), CHUNK):
            x, docs = shingle_hashes[lo:lo + CHUNK], owners[lo:lo + CHUNK]
            values = np.multiply(x[:, None], self.mul[None, :], out=block[:len(x)])
            values += self.add
            starts = np.flatnonzero(np.r_[True, docs[1:] != docs[:-1]])
            part = np.minimum.reduceat(values, starts, axis=0)
            out[docs[starts]] = np.minimum(out[docs[starts]], part)
        return out


class _WordHashes(dict):
    """64-bit BLAKE2b hash of a word's fold, computed once per distinct word of a batch."""

    def __missing__(self, word: str) -> int:
        digest = hashlib.blake2b(fold(word).encode("utf-8"), digest_size=8).digest()
        value = self[word] = int.from_bytes(digest, "little")
        return value


def _shingle_hashes(word_hashes: np.ndarray, lengths: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """32-bit hash of every n-word window inside a document, and the document of each window.

    Documents shorter than n words are padded in front with zero hashes, which turns their one
    window into the polynomial of just their words: one shingle of the whole text.
    """
    padded_lengths = np.maximum(lengths, n)
    ends = np.cumsum(padded_lengths)
    padded = np.zeros(int(ends[-1]), dtype=np.uint64)
    padded[np.arange(len(word_hashes)) + np.repeat(ends - np.cumsum(lengths), lengths)] = word_hashes
    windows = len(padded) - n + 1
    hashes = padded[:windows].copy()
    for j in range(1, n):
        hashes = hashes * POLY + padded[j:windows + j]
    owners = np.repeat(np.arange(len(lengths)), padded_lengths)[:windows]
    inside = ends[owners] - np.arange(windows) >= n
    return hashes[inside] >> np.uint64(32), owners[inside]
