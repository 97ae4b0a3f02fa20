"""Semi-automatic NER labelling: a fine-tuned NER model pre-labels raw texts, and people correct its
entities on the review page (`lmforge serve --review`) instead of marking every entity by hand.

`lmforge label MODEL TEXTS --db URL --queue NAME` queues each text as a review item with the
model's entities (character offsets, each with a score) as its prediction; the reviewer's final
entity set comes back as a records `Correction`. The effort saved is measured in edits
(`edit_count`): a correct pre-label costs nothing, a wrong one about what marking it would have
cost, so edits per entity against 1 (labelling from scratch) is the saving.

The model reads a text as the server's NER does: words from the one word splitter (`data.text`),
tokenised and truncated as the head was trained (`model.inputs`), entities read from the tags of
first sub-tokens by conlleval's rules, each scored by the mean probability of its words' tags. A
pre-label is then exactly what `/v1/ner` would have answered.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer

from lmforge.artifacts import MANIFEST, sha256_file
from lmforge.data.text import word_spans
from lmforge.device import resolve_device
from lmforge.errors import READ_ERRORS, LmforgeError, unreadable
from lmforge.model.bundle import ModelBundle, load_bundle
from lmforge.model.inputs import PAD_ID, encode_words, entity_spans, pad_batch, word_tags
from lmforge.records import ReviewItem, Span, Store
from lmforge.serve.routes_review import edit_count

__all__ = ["LabellingError", "edit_count", "entity_types", "predict_entities", "prelabel", "read_texts"]

BATCH = 32
"""Texts per forward pass."""


class LabellingError(LmforgeError):
    """A model without an NER head, or a texts file that cannot be read."""


def prelabel(model: Path, texts: Iterable[str], store: Store, queue: str, head: str | None = None,
             device: str = "auto", min_score: float = 0.0) -> int:
    """Queue `texts` in review queue `queue` with `model`'s entities as their prediction; returns
    how many were queued (a text already in the queue is not queued twice). Entities scored below
    `min_score` are not shown: a wrong pre-label costs the reviewer a delete, so a weak model pays
    only with its confident entities (benchmarks/claim_c9_labelling.py measures the trade).

    All items are added in one transaction: an interrupted job queues nothing, and running it again
    queues everything once."""
    bundle = load_bundle(model, resolve_device(device))
    name = ner_head(bundle, head)
    types = entity_types(bundle.head(name)["labels"])
    version = sha256_file(Path(model) / MANIFEST)[:12]
    texts = list(texts)
    items = [ReviewItem(task="ner", text=text, labels=types, queue=queue, source="label",
                        model_version=version, prediction={"spans": shown(spans, min_score)})
             for text, spans in zip(texts, predict_entities(bundle, name, texts), strict=True)]
    return len(store.add_review_items(items))


def shown(spans: list[Span], min_score: float) -> list[dict]:
    """The pre-labels a reviewer sees: those scored at least `min_score`, as stored (rounded)."""
    return [entry for entry in map(_span_dict, spans) if entry["score"] >= min_score]


def ner_head(bundle: ModelBundle, head: str | None) -> str:
    """The NER head to run: `head`, or the folder's only one; one line naming the heads it has."""
    ner = [name for name, entry in bundle.spec.items() if entry["task"] == "ner"]
    if (head is not None and head in ner) or (head is None and len(ner) == 1):
        return head or ner[0]
    known = ", ".join(f"{name} ({entry['task']})" for name, entry in bundle.spec.items()) or "none"
    if head is not None:
        wanted = f"no NER head named {head!r}"
    else:
        wanted = "no NER head" if not ner else "several NER heads (choose one with --head)"
    raise LabellingError(f"{bundle.folder}: {wanted} (heads: {known})")


def entity_types(tags: Sequence[str]) -> list[str]:
    """The entity types of a BIO tag set, in the order they first appear (`B-person` -> `person`)."""
    return list(dict.fromkeys(tag.partition("-")[2] for tag in tags if tag[:2] in ("B-", "I-")))


@torch.no_grad()
def predict_entities(bundle: ModelBundle, head: str, texts: Sequence[str]) -> list[list[Span]]:
    """Each text's entities, as character spans with scores, in batches of `BATCH` texts."""
    usage = bundle.usage(head)
    max_len = min(usage.get("max_len", bundle.config.seq_len), bundle.config.context_len)
    tags = bundle.head(head)["labels"]
    model = bundle.task_model(head).eval()
    device = next(model.parameters()).device
    found: list[list[Span]] = []
    for start in range(0, len(texts), BATCH):
        batch = [_encode(bundle.tokenizer, text, max_len) for text in texts[start:start + BATCH]]
        idx, mask = pad_batch([ids for ids, _, _ in batch])
        _, logits = model(head, idx.to(device), mask.to(device))
        probs = logits.float().softmax(-1).cpu()
        found += [_entities(words, word_ids, probs[row, :len(ids)], tags)
                  for row, (ids, words, word_ids) in enumerate(batch)]
    return found


def _encode(tokenizer: Tokenizer, text: str,
            max_len: int) -> tuple[list[int], list[tuple[int, int]], list[int | None]]:
    words = word_spans(text)
    ids, word_ids = encode_words(tokenizer, [text[s:e] for s, e in words], max_len)
    return ids or [PAD_ID], words, word_ids


def _entities(words: list[tuple[int, int]], word_ids: list[int | None], probs: torch.Tensor,
              tags: Sequence[str]) -> list[Span]:
    """Entities from per-token tag probabilities, scored by the mean probability of their words'
    tags at first sub-tokens (serve.heads does the same for /v1/ner)."""
    best, predicted = probs.max(-1)
    word_tag = word_tags(word_ids, predicted.tolist(), tags, len(words))
    confidence = [0.0] * len(words)
    previous = None
    for token, word in enumerate(word_ids):
        if word is not None and word != previous:
            confidence[word] = float(best[token])
        previous = word
    return [Span(words[first][0], words[last - 1][1], kind, sum(confidence[first:last]) / (last - first))
            for kind, first, last in sorted(entity_spans(word_tag), key=lambda span: span[1])]


def _span_dict(span: Span) -> dict[str, Any]:
    return {"start": span.start, "end": span.end, "label": span.label, "score": round(span.score or 0.0, 4)}


def read_texts(path: str | Path) -> list[str]:
    """The texts of a `.txt` file (one per line) or a `.jsonl` file (a "text" string per line);
    blank lines are skipped. One-line LabellingError naming the line that is neither."""
    path = Path(path)
    if path.suffix not in (".txt", ".jsonl"):
        raise LabellingError(f"{path}: expected a .txt file (one text per line) or .jsonl (a \"text\" field)")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except READ_ERRORS as err:
        raise LabellingError(unreadable(path, err, "texts to label, one per line")) from None
    if path.suffix == ".txt":
        return [line for line in lines if line.strip()]
    return [_jsonl_text(path, number, line) for number, line in enumerate(lines, 1) if line.strip()]


def _jsonl_text(path: Path, number: int, line: str) -> str:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise LabellingError(f"{path}:{number}: not JSON ({err.msg})") from None
    text = record.get("text") if isinstance(record, dict) else None
    if not isinstance(text, str):
        raise LabellingError(f"{path}:{number}: expected a JSON object with a \"text\" string")
    return text
