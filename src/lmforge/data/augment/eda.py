"""EDA (Wei & Zou 2019): synonym replacement, random insertion, random swap, random deletion.

The operations edit the words of `lmforge.data.text` (the splitter every step counts with) in
place, so the punctuation, case and line breaks around them survive: eda_nlp lower-cases the
text and keeps only a-z, which suits a classifier's inputs but not text a language model
learns to write. Each operation changes n = max(1, int(alpha * words)) words, as eda_nlp
does; deletion drops each word with probability alpha. Replacement and insertion take their
words from a `Proposer`: WordNet synonyms (`from_source`) or a masked LM's in-context picks
(`mlm`).
"""

from __future__ import annotations

import random
from collections.abc import Callable

from lmforge.data.augment.synonyms import SynonymSource
from lmforge.data.text import Span, word_spans

Proposer = Callable[[str, list[Span]], list[list[str]]]
"""Candidate words for each given word span of a text, in order; [] where there are none."""


def n_changes(alpha: float, n_words: int) -> int:
    """eda_nlp's count: at least one change, so that even a short text is augmented."""
    return max(1, int(alpha * n_words))


def from_source(source: SynonymSource, lang: str) -> Proposer:
    """A context-free proposer: the source's synonyms of each word."""
    return lambda text, spans: [source.synonyms(text[a:b], lang) for a, b in spans]


def synonym_replacement(text: str, rng: random.Random, alpha: float, propose: Proposer) -> str:
    """Replace n random words that have candidates with one of their candidates."""
    picks = _pick_words(text, rng, alpha, propose)
    return _rewrite(text, [(a, b, _match_case(word, text[a:b])) for (a, b), word in picks.items()])


def random_insertion(text: str, rng: random.Random, alpha: float, propose: Proposer) -> str:
    """Insert a candidate of each of n random words before a random word of the text."""
    spans = word_spans(text)
    picks = _pick_words(text, rng, alpha, propose)
    starts = [rng.choice(spans)[0] for _ in picks]
    return _rewrite(text, [(at, at, f"{word} ") for at, word in zip(starts, picks.values(), strict=True)])


def random_swap(text: str, rng: random.Random, alpha: float) -> str:
    """Swap the words at two random positions, n times."""
    spans = word_spans(text)
    if len(spans) < 2:
        return text
    words = [text[a:b] for a, b in spans]
    for _ in range(n_changes(alpha, len(words))):
        i, j = rng.sample(range(len(words)), 2)
        words[i], words[j] = words[j], words[i]
    return _rewrite(text, [(a, b, word) for (a, b), word in zip(spans, words, strict=True)])


def random_deletion(text: str, rng: random.Random, alpha: float) -> str:
    """Delete each word with probability alpha, keeping one if all would go (as eda_nlp)."""
    spans = word_spans(text)
    doomed = [span for span in spans if rng.random() < alpha]
    if spans and len(doomed) == len(spans):
        doomed.remove(rng.choice(doomed))
    return _rewrite(text, [(a, _after_spaces(text, b), "") for a, b in doomed])


def _pick_words(text: str, rng: random.Random, alpha: float, propose: Proposer) -> dict[Span, str]:
    """Up to n words, tried in random order, each with a random one of its candidates.

    Words are proposed for in rounds of as many as are still missing, so a masked LM masks few
    words at once (and about as many as it was trained with), yet words without candidates
    (function words in WordNet) are made up for from the rest, as eda_nlp does.
    """
    spans = word_spans(text)
    n = n_changes(alpha, len(spans)) if spans else 0
    order = rng.sample(spans, len(spans))
    picks: dict[Span, str] = {}
    while order and len(picks) < n:
        batch, order = order[:n - len(picks)], order[n - len(picks):]
        for span, candidates in zip(batch, propose(text, batch), strict=True):
            if candidates:
                picks[span] = rng.choice(candidates)
    return picks


def _rewrite(text: str, edits: list[tuple[int, int, str]]) -> str:
    """Apply non-overlapping (start, end, replacement) edits; insertions have start == end."""
    out, at = [], 0
    for start, end, replacement in sorted(edits):
        out += [text[at:start], replacement]
        at = end
    return "".join([*out, text[at:]])


def _after_spaces(text: str, end: int) -> int:
    while end < len(text) and text[end] in " \t":
        end += 1
    return end


def _match_case(word: str, original: str) -> str:
    """Capitalise a replacement of a capitalised word (a sentence start stays one)."""
    return word[:1].upper() + word[1:] if original[:1].isupper() else word
