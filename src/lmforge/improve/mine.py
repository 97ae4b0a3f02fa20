"""Error mining: the worst answers the server gave, into a review queue (`lmforge improve mine`).

"Worst" in the order a reviewer's time pays off most:
1. answers a user said were wrong (a negative rating, or a label / entity set different from the
   answer), most negative first;
2. then the least confident answers (classification: the top probability; NER: the mean entity
   score), a stand-in for the loss when there is no label to compute it with.
Near-identical texts (case and spacing) are queued once, with their worst answer. The share
(default 1%) is of the requests considered, rounded up; every answer with negative feedback is
queued even beyond it, since a user already spent effort telling us.

What the user said travels with the item (`prediction.feedback`), so the reviewer sees it, but the
model's answer stays the prediction to accept or correct: users are sometimes wrong too.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from lmforge.errors import LmforgeError
from lmforge.model.folder import read_heads
from lmforge.records import Feedback, RequestLog, ReviewItem, Store

TASKS = ("classify", "ner")


class MiningError(LmforgeError):
    """A mining request that cannot be met (no such head, nothing logged)."""


@dataclass
class Candidate:
    request: RequestLog
    negative: float
    """How wrong users said the answer was: 0 when nobody complained; larger is worse."""
    said: dict[str, Any]


@dataclass
class MineReport:
    queue: str
    considered: int
    queued: int
    negative_feedback: int
    already_queued: int


def label_set(model: Path, task: str, head: str | None) -> tuple[str, list[str]]:
    """The head's name and the labels a reviewer picks from: class names, or entity types (the
    NER head's tags without their B-/I- prefixes)."""
    heads = {name: entry for name, entry in read_heads(model).items() if entry["task"] == task
             and (head is None or name == head)}
    if len(heads) != 1:
        raise MiningError(f"{model}: expected exactly one {task} head{f' named {head!r}' if head else ''}; "
                          f"heads: {', '.join(read_heads(model)) or 'none'}")
    name, entry = next(iter(heads.items()))
    labels = list(entry.get("labels") or [])
    if task == "ner":
        labels = sorted({tag.split("-", 1)[1] for tag in labels if "-" in tag})
    return name, labels


def feedback_by_request(store: Store, requests: list[RequestLog]) -> dict[str, list[Feedback]]:
    """The feedback on each of `requests`, in the order it arrived (none: an empty list)."""
    said: dict[str, list[Feedback]] = defaultdict(list)
    for item in store.feedback(r.id for r in requests):
        said[item.request_id].append(item)
    return said


def negativity(request: RequestLog, feedback: list[Feedback]) -> tuple[float, dict[str, Any]]:
    """How strongly feedback says the answer was wrong, and what it said (the last word wins)."""
    score, said = 0.0, {}
    for item in feedback:
        if item.rating is not None:
            said["rating"] = item.rating
            score = max(score, -item.rating)
        if item.label is not None:
            said["label"] = item.label
            if item.label != request.output.get("label"):
                score = max(score, 1.0)
        if item.spans is not None:
            said["spans"] = [span.__dict__ for span in item.spans]
            if _entity_set(item.spans) != _entity_set(request.output.get("entities", [])):
                score = max(score, 1.0)
    return score, said


def _entity_set(spans: list[Any]) -> set[tuple[int, int, str]]:
    as_dicts = [s if isinstance(s, dict) else s.__dict__ for s in spans]
    return {(s["start"], s["end"], s["label"]) for s in as_dicts}


def _normalised(text: str) -> str:
    return " ".join(text.casefold().split())


def worst(candidates: list[Candidate], share: float) -> list[Candidate]:
    """Negative feedback first (most negative first), then lowest confidence; one per text."""
    ranked = sorted(candidates, key=lambda c: (-c.negative, c.request.confidence if c.request.confidence
                                                is not None else 1.0, c.request.created_at))
    seen, unique = set(), []
    for candidate in ranked:
        key = _normalised(candidate.request.input_text)
        if key not in seen:
            seen.add(key)
            unique.append(candidate)
    wanted = max(math.ceil(share * len(candidates)), sum(c.negative > 0 for c in unique))
    return unique[:wanted]


def review_item(candidate: Candidate, task: str, labels: list[str], queue: str, rank: int) -> ReviewItem:
    request = candidate.request
    if task == "classify":
        prediction: dict[str, Any] = {"label": request.output.get("label"),
                                      "score": request.output.get("score")}
    else:
        prediction = {"spans": [{k: e[k] for k in ("start", "end", "label", "score") if k in e}
                                for e in request.output.get("entities", [])]}
    if candidate.said:
        prediction["feedback"] = candidate.said
    if candidate.negative > 0:
        reason = "negative feedback: " + ", ".join(f"{k} {v if k != 'spans' else len(v)}"
                                                   for k, v in candidate.said.items())
    else:
        c = request.confidence
        reason = f"confidence {c:.3f}" if c is not None else "no confidence"
    return ReviewItem(task=task, text=request.input_text, labels=labels, prediction=prediction,
                      source="mined",
                      priority=float(rank), reason=reason, request_id=request.id,
                      model_version=request.model_version, queue=queue)


def mine(store: Store, model: Path, *, task: str = "classify", head: str | None = None, share: float = 0.01,
         queue: str | None = None, since: datetime | None = None, served_as: str | None = None) -> MineReport:
    """Queue the worst `share` of the logged `task` answers of `model` (a model folder: the labels
    reviewers choose from come from its head) for review. `served_as` limits it to the requests
    of one served model name; by default every name whose answers used a head of this task."""
    if task not in TASKS:
        raise MiningError(f"task {task!r}: review queues take {' or '.join(TASKS)}")
    if not 0 < share <= 1:
        raise MiningError(f"share {share}: expected a fraction in (0, 1]")
    head_name, labels = label_set(model, task, head)
    requests = [r for r in store.requests(since=since, model=served_as, task=task) if r.status == 200]
    if not requests:
        which = f" of {served_as!r}" if served_as else ""
        raise MiningError(f"no logged {task} requests{which} in {store.url}")
    said = feedback_by_request(store, requests)
    candidates = [Candidate(r, *negativity(r, said[r.id])) for r in requests]
    chosen = worst(candidates, share)
    name = queue or f"mined-{task}-{head_name}"
    items = [review_item(c, task, labels, name, rank) for rank, c in enumerate(chosen)]
    added = store.add_review_items(items)
    return MineReport(name, len(requests), len(added), sum(c.negative > 0 for c in chosen),
                      len(items) - len(added))
