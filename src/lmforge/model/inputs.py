"""How a task head's input is tokenised and its output read back: one definition for fine-tuning,
evaluation, export and serving, so a served head sees exactly what it was trained on.

Sequences are right-padded with `<pad>` (id 0); a padding mask is True for real tokens. For NER
only the first sub-token of a word carries its tag, so word-level tags are read back from the
predictions at first sub-tokens, and entities from those tags by conlleval's rules.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tokenizers import Tokenizer

PAD_ID = 0
Span = tuple[str, int, int]


def encode_text(tokenizer: Tokenizer, text: str, max_len: int) -> list[int]:
    """Token ids of one text for a sequence head, truncated to `max_len`; an empty text is one pad
    (a row needs at least one token)."""
    return tokenizer.encode(text).ids[:max_len] or [PAD_ID]


def encode_words(tokenizer: Tokenizer, words: Sequence[str],
                 max_len: int) -> tuple[list[int], list[int | None]]:
    """Token ids and their word index. Non-first words get a leading space, as in running text:
    the byte-level pre-tokenizer does not add one itself, even for pre-tokenized input.
    """
    spaced = [word if i == 0 else " " + word for i, word in enumerate(words)]
    encoding = tokenizer.encode(spaced, is_pretokenized=True)
    return encoding.ids[:max_len], encoding.word_ids[:max_len]


def word_tags(word_ids: Sequence[int | None], predicted: Sequence[int], label_set: Sequence[str],
              n_words: int) -> list[str]:
    """Word-level tags from per-token predictions at first sub-tokens; truncated words get `O`."""
    tags = ["O"] * n_words
    previous = None
    for word, tag in zip(word_ids, predicted, strict=False):
        if word is not None and word != previous:
            tags[word] = label_set[tag]
        previous = word
    return tags


def entity_spans(tags: Sequence[str]) -> set[Span]:
    """Entities of a BIO tag sequence as `(type, start, end)`, `end` exclusive.

    seqeval's default (conlleval) rules: B- always starts an entity, and an I- starts one
    unless it continues an entity of the same type, so `O I-per` and `B-loc I-per` each
    yield a `per` entity rather than dropping the tokens.
    """
    spans: set[Span] = set()
    kind, start = None, 0
    for i, tag in enumerate([*tags, "O"]):  # the sentinel "O" closes an entity at the end
        prefix, _, tag_type = tag.partition("-")
        continues = prefix == "I" and tag_type == kind
        if kind is not None and not continues:
            spans.add((kind, start, i))
            kind = None
        if prefix in ("B", "I") and not continues:
            kind, start = tag_type, i
    return spans


def pad(rows: Sequence[Sequence[int]], fill: int) -> torch.Tensor:
    """Right-pad integer rows to the longest one."""
    width = max(len(row) for row in rows)
    return torch.tensor([list(row) + [fill] * (width - len(row)) for row in rows], dtype=torch.long)


def pad_batch(rows: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(idx, padding_mask) of token rows, right-padded with `<pad>`."""
    return pad(rows, PAD_ID), pad([[1] * len(row) for row in rows], 0).bool()
