"""Fine-tuning examples as token ids: reading, the dev hold-out, sub-word tag alignment, batches.

Tokenisation and padding follow `model.inputs` (what serving uses too). For NER only the first
sub-token of a word carries its tag (continuations and pads are -100).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer

from lmforge.data.tasks import TaggedExample, TextExample, encode, read_conll, read_text_labels
from lmforge.model.inputs import encode_text, encode_words, pad, pad_batch
from lmforge.model.masking import IGNORE_INDEX

Example = TextExample | TaggedExample


@dataclass
class Encoded:
    """A data split as token ids, with the targets the loss and the metrics need.

    `targets` are class ids (classify), per-token tag ids (ner) or unused (embed); `gold` are the
    label strings (classify/embed) or word-level tag lists (ner), for scoring.
    """

    ids: list[list[int]]
    targets: list[int] | list[list[int]]
    gold: list[str] | list[list[str]]


def read_examples(path: Path, task: str, text_column: str | int, label_column: str | int) -> list[Example]:
    """CoNLL sentences for ner, text + label rows (TSV/CSV/JSONL) otherwise."""
    if task == "ner":
        return read_conll(path)
    return read_text_labels(path, text_column, label_column)


def hold_out(examples: list[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """(train, dev): a seeded shuffle, so the same file and seed always give the same split."""
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_dev = max(1, round(fraction * len(examples)))
    return [examples[i] for i in order[n_dev:]], [examples[i] for i in order[:n_dev]]


def align_tags(word_ids: Sequence[int | None], tag_ids: Sequence[int]) -> list[int]:
    """The tag of each word on its first sub-token; -100 on continuation pieces."""
    labels, previous = [], None
    for word in word_ids:
        labels.append(IGNORE_INDEX if word is None or word == previous else tag_ids[word])
        previous = word
    return labels


def encode_examples(tokenizer: Tokenizer, examples: Sequence[Example], task: str,
                    label_set: Sequence[str], max_len: int) -> Encoded:
    """Tokenise a split; labels outside `label_set` are a DataError (see `tasks.encode`)."""
    if task == "ner":
        ids, targets = [], []
        for example in examples:
            token_ids, word_ids = encode_words(tokenizer, example.tokens, max_len)
            ids.append(token_ids)
            targets.append(align_tags(word_ids, encode(example.tags, label_set)))
        return Encoded(ids, targets, [example.tags for example in examples])
    ids = [encode_text(tokenizer, example.text, max_len) for example in examples]
    gold = [example.label for example in examples]
    return Encoded(ids, encode(gold, label_set) if task == "classify" else [0] * len(gold), gold)


def batch(data: Encoded, rows: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(idx, padding_mask, labels) of the chosen rows; token labels are padded with -100."""
    ids = [data.ids[i] for i in rows]
    idx, mask = pad_batch(ids)
    targets = [data.targets[i] for i in rows]
    labels = pad(targets, IGNORE_INDEX) if isinstance(targets[0], list) else torch.tensor(targets)
    return idx, mask, labels


def epoch_rows(n: int, batch_size: int, seed: int, step: int) -> list[int]:
    """Row indices of training batch `step`: a fresh seeded permutation each epoch.

    A pure function of the step (not an iterator), so a resumed run reads the batches the
    uninterrupted one would have. An epoch is the full batches that fit; the rest of the
    permutation waits for a later epoch's shuffle. Fewer rows than a batch: every row, each step.
    """
    per_epoch = max(1, n // batch_size)
    epoch, index = divmod(step, per_epoch)
    order = list(range(n))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order[index * batch_size:(index + 1) * batch_size]
