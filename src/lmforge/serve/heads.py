"""Single-pass work of one task head: texts in, labels / entities / embeddings out.

A request is tokenised as the head was trained (`model.inputs`), becomes a `Job` of one or more
rows, waits in the head's dynamic batcher, and runs with the other jobs of its batch in one
forward pass: every row is padded to the batch's longest (the batcher groups rows by length) and
the outputs are split back per job. The forward pass runs in a worker thread so that the event
loop keeps accepting and queueing requests meanwhile.

NER reads words with the one word splitter (`data.text`), so entity offsets are character offsets
into the text the client sent.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lmforge.data.text import word_spans
from lmforge.model.inputs import encode_text, encode_words, entity_spans, pad_batch, word_tags
from lmforge.serve.runtime import Head, ServedModel


@dataclass
class Job:
    """One request's rows for one head; `words` holds each NER row's (start, end) word offsets and
    their sub-token word ids."""

    texts: list[str]
    rows: list[list[int]]
    words: list[tuple[list[tuple[int, int]], list[int | None]]] = field(default_factory=list)

    @property
    def longest(self) -> int:
        return max(len(row) for row in self.rows)


def encode_job(model: ServedModel, head: Head, texts: list[str]) -> Job:
    """Tokenise `texts` for `head`, truncated to the length it was trained on."""
    if head.task != "ner":
        return Job(texts, [encode_text(model.tokenizer, text, head.max_len) for text in texts])
    job = Job(texts, [])
    for text in texts:
        spans = word_spans(text)
        ids, word_ids = encode_words(model.tokenizer, [text[s:e] for s, e in spans], head.max_len)
        job.rows.append(ids or [0])
        job.words.append((spans, word_ids))
    return job


async def run_jobs(head: Head, jobs: list[Job]) -> list[list[dict[str, Any]]]:
    """The dynamic batcher's `run_batch` for `head`: one forward pass for all rows of all jobs."""
    rows = [row for job in jobs for row in job.rows]
    idx, mask = pad_batch(rows)
    outputs = await asyncio.to_thread(head.forward, idx.numpy(), mask.long().numpy())
    results, start = [], 0
    for job in jobs:
        part = outputs[start : start + len(job.rows)]
        start += len(job.rows)
        results.append([_result(head, job, i, out) for i, out in enumerate(part)])
    return results


def _result(head: Head, job: Job, row: int, output: np.ndarray) -> dict[str, Any]:
    if head.task == "classify":
        probs = _softmax(output)
        best = int(probs.argmax())
        return {"label": head.labels[best], "score": float(probs[best]),
                "scores": {label: float(p) for label, p in zip(head.labels, probs, strict=True)}}
    if head.task == "embed":
        return {"embedding": output.astype(float).tolist()}
    if head.task == "score":
        total, count = float(output[0]), int(output[1])
        return {"log_likelihood": total, "tokens": count,
                "perplexity": float(np.exp(-total / count)) if count else None}
    return {"entities": _entities(head, job.texts[row], *job.words[row], output[: len(job.rows[row])])}


def _entities(head: Head, text: str, spans: list[tuple[int, int]], word_ids: list[int | None],
              logits: np.ndarray) -> list[dict[str, Any]]:
    """Entities as character spans, each scored by the mean probability of its words' tags."""
    probs = _softmax(logits)
    predicted = probs.argmax(-1)
    tags = word_tags(word_ids, predicted.tolist(), head.labels, len(spans))
    confidence = [0.0] * len(spans)
    previous = None
    for token, word in enumerate(word_ids):
        if word is not None and word != previous:
            confidence[word] = float(probs[token, predicted[token]])
        previous = word
    entities = []
    for kind, first, last in sorted(entity_spans(tags), key=lambda span: span[1]):
        start, end = spans[first][0], spans[last - 1][1]
        entities.append({"start": start, "end": end, "label": kind, "text": text[start:end],
                         "score": sum(confidence[first:last]) / (last - first)})
    return entities


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)
