"""Near-duplicate detection around its thresholds, on real text edited to known Jaccard similarities.

Each pair is a 400-token window of WikiText-2 (test split) and a copy of it with some words
replaced by real words from the validation split, spread out so that the copy reaches a planted
5-word-shingle Jaccard similarity (0.50 to 0.95). The similarity is computed here, with a
shingling written for this test. The pairs go through the curation's own dedup stage (keys per
shard with the default settings, then the global decision), and what it removes is compared with
the documented design: MinHash LSH with 14 bands x 8 rows (FineWeb), then verification of each
candidate pair at an estimated Jaccard of 0.7.

Under that design a pair of true similarity s is removed with probability
P(s) = P(some band of 8 rows is equal, and at least 79 of the 112 values are equal), each value
being equal with probability s (a MinHash property); `removal_probability` computes it exactly.
Per level, the number of removed pairs must lie within 3 standard deviations (+1) of the sum
of P(s) over the level's pairs. Everything is seeded: the result is the same on every run.
"""

from __future__ import annotations

import math
import random
import re
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from lmforge.data.curate.dedup import stage as dedup_stage
from lmforge.data.curate.dedup.minhash import MinHasher
from lmforge.data.curate.dedup.step import DedupSettings

BANDS, ROWS, VERIFY = 14, 8, 0.7
"""The documented design, written here rather than read from the code under test."""
LEVELS = {0.50: 30, 0.60: 40, 0.68: 40, 0.72: 40, 0.75: 40, 0.85: 30, 0.95: 20}
"""Planted similarity -> number of pairs. 0.685 is the LSH curve's 50% point, 0.7 the verification bar."""
WINDOW = 400
WORD = re.compile(r"[A-Za-z]+")


ASCII_WORD = re.compile(r"[a-z0-9]+(?:(?:['.]|(?<=[0-9]),(?=[0-9])|_+)[a-z0-9]+)*")
"""The documented words of lmforge.data.text, for the ASCII text of these windows: letter and digit
runs, joined inside a word by ' and . (and , between digits, and underscores)."""


def shingles(text: str, n: int = 5) -> set[tuple[str, ...]]:
    """Word 5-grams as FineWeb takes them: case folded, digit runs as "0", punctuation dropped."""
    words = ASCII_WORD.findall(re.sub(r"\d+", "0", text.casefold()))
    return {tuple(words[i:i + n]) for i in range(max(1, len(words) - n + 1))}


def jaccard(a: str, b: str) -> float:
    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / len(sa | sb)


@cache
def removal_probability(s: float) -> float:
    """P(candidate in some band and estimated Jaccard >= VERIFY), with BANDS x ROWS iid values."""
    n, need = BANDS * ROWS, math.ceil(VERIFY * BANDS * ROWS - 1e-9)
    per_band = [math.comb(ROWS, k) * s ** k * (1 - s) ** (ROWS - k) for k in range(ROWS + 1)]
    states = {(0, False): 1.0}  # (equal values so far, some band fully equal) -> probability
    for _ in range(BANDS):
        step: dict[tuple[int, bool], float] = {}
        for (equal, full), p in states.items():
            for k, q in enumerate(per_band):
                key = (equal + k, full or k == ROWS)
                step[key] = step.get(key, 0.0) + p * q
        states = step
    assert math.isclose(sum(states.values()), 1.0) and need <= n
    return sum(p for (equal, full), p in states.items() if full and equal >= need)


def test_removal_probability_is_the_s_curve_with_verification():
    """Without the verification bar it is the LSH curve 1 - (1 - s^8)^14 (50% at 0.685; 65% at 0.72)."""
    for s in (0.5, 0.72, 0.9):
        assert removal_probability(s) <= 1 - (1 - s ** ROWS) ** BANDS
    assert removal_probability(0.5) < 1e-4 and removal_probability(0.6) < 0.01
    assert 0.4 < removal_probability(0.72) < 0.6 and removal_probability(0.85) > 0.97


def edited_copy(rng: random.Random, tokens: list[str], fill: list[str],
                target: float) -> tuple[str, float] | None:
    """A copy of `tokens` with spread-out word substitutions within 0.012 of the target Jaccard,
    or None if 60 tries miss (the window then makes way for the next)."""
    text = " ".join(tokens)
    size = len(shingles(text))
    editable = [k for k, token in enumerate(tokens) if WORD.fullmatch(token)]
    estimate = round(size * (1 - target) / (5 * (1 + target)))  # J = (S - 5m) / (S + 5m), disjoint edits
    for attempt in range(60):
        m = max(1, estimate + attempt % 3 - 1)
        segment = len(tokens) / m
        copy = list(tokens)
        for s in range(m):
            k = rng.choice([k for k in editable if s * segment <= k < (s + 1) * segment] or editable)
            copy[k] = rng.choice([w for w in rng.sample(fill, 3) if w.casefold() != tokens[k].casefold()])
        similarity = jaccard(text, " ".join(copy))
        if abs(similarity - target) <= 0.012:
            return " ".join(copy), similarity
    return None


@pytest.fixture(scope="module")
def pairs(shared_data) -> list[tuple[float, str, str, float]]:
    """(planted level, original, copy, true Jaccard) from real text."""
    wiki = shared_data / "wikitext2" / "tokens"
    tokens = (wiki / "test.txt").read_text(encoding="utf-8").split()
    fill = sorted({t for t in (wiki / "valid.txt").read_text(encoding="utf-8").split()
                   if WORD.fullmatch(t) and len(t) > 2})
    windows = [tokens[i:i + WINDOW] for i in range(0, len(tokens) - WINDOW, WINDOW)]
    windows = [w for w in windows if all(t.isascii() for t in w)]
    rng = random.Random(0)
    rng.shuffle(windows)
    out, chosen = [], iter(windows)
    for level, count in LEVELS.items():
        while sum(pair[0] == level for pair in out) < count:
            original = next(chosen)
            if made := edited_copy(rng, original, fill, level):
                out.append((level, " ".join(original), *made))
    return out


@pytest.fixture(scope="module")
def removed(pairs, tmp_path_factory) -> tuple[dict[str, dict], np.ndarray]:
    """The curation's dedup stage with default settings: originals in shard 0, copies in shard 1."""
    folder: Path = tmp_path_factory.mktemp("near_dedup")
    settings = DedupSettings()
    shards = []
    for name, index in (("a", 1), ("b", 2)):
        docs = [{"id": f"{name}{i}", "text": pair[index]} for i, pair in enumerate(pairs)]
        shards.append(folder / f"shard_{name}.keys.npz")
        dedup_stage.write_keys(shards[-1], docs, settings)
    dedup_stage.decide(shards, folder / "dedup.json")
    signatures = [np.load(path)["signatures"] for path in shards]
    agreement = (signatures[0] == signatures[1]).mean(axis=1)
    return dedup_stage.load_decisions(folder / "dedup.json"), agreement


def test_pairs_are_real_text_at_the_planted_similarities(pairs):
    """The shingling here and the product's agree (so the planted value is what MinHash estimates)."""
    hasher = MinHasher(ngram=5)
    for level, original, copy, similarity in pairs:
        assert abs(similarity - level) <= 0.012
        a, b = hasher.shingles(original), hasher.shingles(copy)
        assert len(a & b) / len(a | b) == pytest.approx(similarity)
    below = [s for level, *_, s in pairs if level < 0.7]
    assert max(below) < 0.7 < min(s for level, *_, s in pairs if level > 0.7)


def test_only_copies_are_removed_and_each_names_its_original(pairs, removed):
    decisions, _ = removed
    assert all(doc_id.startswith("b") and d["kept_id"] == "a" + doc_id[1:] and d["reason"] == "near_duplicate"
               for doc_id, d in decisions.items()), "an unrelated real document was called a duplicate"


def test_no_pair_is_removed_below_the_verification_bar(pairs, removed):
    """Verification: a removed pair's signatures agree on at least 70% of their values; and pairs
    at Jaccard 0.5 (LSH candidates 5% of the time) are never removed."""
    decisions, agreement = removed
    gone = np.array([f"b{i}" in decisions for i in range(len(pairs))])
    assert np.all(agreement[gone] >= VERIFY), sorted(agreement[gone])[:5]
    assert not any(gone[i] for i, pair in enumerate(pairs) if pair[0] == 0.5)


def test_removal_rate_follows_the_s_curve_at_every_level(pairs, removed):
    decisions, _ = removed
    report, outside = [], []
    for level in LEVELS:
        members = [(i, s) for i, (lv, *_, s) in enumerate(pairs) if lv == level]
        observed = sum(f"b{i}" in decisions for i, _ in members)
        p = [removal_probability(s) for _, s in members]
        expected, sd = sum(p), math.sqrt(sum(x * (1 - x) for x in p))
        report.append(f"s={level}: {observed}/{len(members)} removed, expected {expected:.1f} +- {sd:.1f}")
        if abs(observed - expected) > 3 * sd + 1:
            outside.append(report[-1])
    print("\n" + "\n".join(report))
    assert not outside, outside
