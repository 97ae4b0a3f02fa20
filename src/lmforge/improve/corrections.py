"""Reviewed corrections as a fine-tuning file: what `lmforge improve train` learns from.

Classification becomes JSONL rows `{"text", "label"}`; NER becomes CoNLL (one `word<TAB>tag` line
per word, a blank line between texts), the words cut by the one word splitter the server's NER
answers are built on, a word tagged with the entity it overlaps (B- on the entity's first word).
Both are formats `lmforge.data.tasks` reads, so the file also works with `lmforge finetune`.
"""

from __future__ import annotations

import json
from pathlib import Path

from lmforge.artifacts import atomic_write_text
from lmforge.data.text import word_spans
from lmforge.errors import LmforgeError
from lmforge.records import Correction, ReviewItem, Span, Store


class CorrectionsError(LmforgeError):
    """Nothing to learn from: no corrections in the queue, or a queue that mixes tasks."""


def bio_tags(text: str, spans: list[Span]) -> list[tuple[str, str]]:
    """(word, BIO tag) for every word of `text`, from character-offset entities."""
    rows, inside = [], None
    for start, end in word_spans(text):
        entity = next((s for s in spans if start < s.end and s.start < end), None)
        tag = "O" if entity is None else ("I-" if entity is inside else "B-") + entity.label
        inside = entity
        rows.append((text[start:end], tag))
    return rows


def final_answer(item: ReviewItem, correction: Correction) -> str | list[Span]:
    """The reviewed label (classification) or entity set (NER)."""
    if item.task == "classify":
        return correction.label if correction.label is not None else item.prediction["label"]
    if correction.spans is not None:
        return correction.spans
    return [Span(s["start"], s["end"], s["label"]) for s in item.prediction.get("spans", [])]


def write_training_file(store: Store, queue: str, out: Path) -> tuple[str, int]:
    """Write the queue's corrections to `out` (.jsonl for classification, .conll for NER, whatever
    suffix was given); the task and the number of examples."""
    reviewed = store.corrections(queue=queue)
    if not reviewed:
        raise CorrectionsError(f"queue {queue!r} has no corrections yet (queues: "
                               f"{', '.join(store.queues()) or 'none'})")
    tasks = {item.task for item, _ in reviewed}
    if len(tasks) != 1:
        raise CorrectionsError(f"queue {queue!r} mixes tasks {sorted(tasks)}")
    task = tasks.pop()
    if task == "classify":
        lines = [json.dumps({"text": item.text, "label": final_answer(item, c)}, ensure_ascii=False)
                 for item, c in reviewed]
        text = "\n".join(lines) + "\n"
    else:
        blocks = ["\n".join(f"{word}\t{tag}" for word, tag in bio_tags(item.text, final_answer(item, c)))
                  for item, c in reviewed]
        text = "\n\n".join(block for block in blocks if block) + "\n"
    atomic_write_text(out, text)
    return task, len(reviewed)
