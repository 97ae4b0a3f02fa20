"""The request log: what the server answered, PII-anonymised, written to the records store in the
background, so a slow or absent database never holds up an answer.

Anonymisation is the curation step's (`find_pii` + `redact`, typed placeholders such as `<EMAIL>`)
applied to every text before it leaves the process: the request's input and any generated text.
NER answers are character spans into the input, so they are moved to the anonymised text; an entity
that overlaps a piece of PII is dropped from the log (its text is gone, and a reviewer cannot judge
it). User ids are kept only as keyed hashes (pseudonyms: the A/B analysis counts users, it never
needs who they are).

Entries wait in a bounded queue; a writer task stores them in batches in a worker thread. When
the queue is full an entry is dropped and counted rather than slowing the answer down. Feedback
may arrive before its request's entry is stored: `flush` lets the feedback route wait for it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from lmforge.data.curate.steps.pii import Span as PiiSpan
from lmforge.data.curate.steps.pii import find_pii, redact
from lmforge.records import RequestLog, Store, utcnow

log = logging.getLogger("lmforge.serve")
BATCH = 256


def anonymise(text: str) -> tuple[str, list[PiiSpan]]:
    """`text` with its PII replaced by typed placeholders, and the spans that were replaced."""
    spans = find_pii(text)
    return (redact(text, spans) if spans else text), spans


def move_entities(text: str, pii: list[PiiSpan], entities: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Entities (character spans into `text`) moved onto `redact(text, pii)`; those overlapping PII
    are dropped, and so is each entity's `text` (the logged input holds it)."""
    if not pii:
        return [{k: v for k, v in e.items() if k != "text"} for e in entities]
    moved = []
    for entity in entities:
        start, end = entity["start"], entity["end"]
        if any(start < b and a < end for a, b, _ in pii):
            continue
        shift = sum(len(redacted_piece(kind)) - (b - a) for a, b, kind in pii if b <= start)
        moved.append({**{k: v for k, v in entity.items() if k != "text"},
                      "start": start + shift, "end": end + shift})
    return moved


def redacted_piece(kind: str) -> str:
    """The placeholder `redact` writes for one span of `kind`."""
    return redact("x", [(0, 1, kind)])


def logged_output(task: str, text: str, pii: list[PiiSpan], result: dict[str, Any]) -> dict[str, Any]:
    """The part of an answer worth keeping for review: no embeddings, no PII."""
    if task == "classify":
        return {"label": result["label"], "score": result["score"]}
    if task == "ner":
        return {"entities": move_entities(text, pii, result["entities"])}
    if task == "generate":
        return {"text": anonymise(result["text"])[0]}
    return {k: v for k, v in result.items() if k != "embedding"}


def confidence(task: str, result: dict[str, Any]) -> float | None:
    """Classify: the top probability; NER: the mean entity score (1 with no entity found)."""
    if task == "classify":
        return result["score"]
    if task == "ner":
        scores = [e["score"] for e in result["entities"]]
        return sum(scores) / len(scores) if scores else 1.0
    return None


def pseudonym(user: str, salt: str) -> str:
    """A keyed hash of a user id: stable for the analysis, not reversible without the salt."""
    return hmac.new(salt.encode(), user.encode(), hashlib.sha256).hexdigest()[:32]


class RequestLogger:
    def __init__(self, store: Store, capacity: int = 10_000):
        self.store = store
        self.dropped = 0
        self._queue: asyncio.Queue[RequestLog] = asyncio.Queue(capacity)
        self._pending: set[str] = set()
        self._writer: asyncio.Task[None] | None = None
        self._retention: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    def start(self) -> None:
        self._writer = asyncio.create_task(self._write())

    def record(self, entry: RequestLog) -> None:
        try:
            self._queue.put_nowait(entry)
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning("request log full: dropped an entry (%d so far)", self.dropped)
            return
        self._pending.add(entry.id)
        self._idle.clear()

    async def flush(self, request_id: str | None = None) -> None:
        """Wait until `request_id` (or everything queued) is stored."""
        while (request_id in self._pending) if request_id else not self._idle.is_set():
            await asyncio.sleep(0.005)

    async def close(self) -> None:
        await self.flush()
        for task in (self._writer, self._retention):
            if task is not None:
                task.cancel()

    def keep_for(self, days: float, every_seconds: float = 86_400.0) -> None:
        """Retention: delete requests older than `days` (and their feedback) now and then daily."""
        async def purge() -> None:
            while True:
                cutoff = utcnow() - timedelta(days=days)
                try:
                    deleted = await asyncio.to_thread(self.store.purge, cutoff)
                    log.info("retention: %d requests older than %g days deleted", deleted, days)
                except Exception as err:  # noqa: BLE001 - retried at the next period
                    log.error("retention: purge failed: %s", err)
                await asyncio.sleep(every_seconds)
        self._retention = asyncio.create_task(purge())

    async def _write(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await asyncio.to_thread(self.store.log_requests, batch)
            except Exception as err:  # noqa: BLE001 - a database outage must not stop the server
                log.error("request log: %d entries not stored: %s", len(batch), err)
            self._pending.difference_update(entry.id for entry in batch)
            if self._queue.empty():
                self._idle.set()


def log_entries(task: str, head: str | None, texts: list[str], results: list[dict[str, Any]], ids: list[str],
                *, model: str, version: str, route: str, seconds: float, experiment: str | None = None,
                variant: str | None = None, user: str | None = None) -> list[RequestLog]:
    """One anonymised record per input of a request (what `Service.answered` noted)."""
    entries = []
    for request_id, text, result in zip(ids, texts, results, strict=True):
        clean, pii = anonymise(text)
        entries.append(RequestLog(id=request_id, model=model, model_version=version, route=route, task=task,
                                  input_text=clean, output=logged_output(task, text, pii, result),
                                  latency_ms=seconds * 1000, confidence=confidence(task, result), head=head,
                                  experiment=experiment, variant=variant, user=user))
    return entries
