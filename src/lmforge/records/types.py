"""The records' plain types: what the server logs, what users send back, what reviewers see and decide.

Plain dataclasses rather than the ORM rows, so that serve and improve never hold a database
session or see SQLAlchemy: `lmforge.records.store` converts at its boundary. Datetimes are
timezone-aware UTC everywhere; text is the PII-anonymised text the caller logged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

from lmforge.errors import LmforgeError


def utcnow() -> datetime:
    """Now, timezone-aware in UTC: naive datetimes are ambiguous once records cross machines."""
    return datetime.now(timezone.utc)


class RecordsError(LmforgeError):
    """The records database cannot be used: a bad URL, an unreachable server, a schema newer than
    this lmforge knows. One line, naming the URL (password masked)."""


class UnknownRequest(RecordsError):
    """Feedback for a request id that was never logged, or was purged (the server answers 404)."""


class InvalidCorrection(RecordsError):
    """A correction or feedback that does not fit its text: a span outside it, start >= end, an
    unknown label, overlapping spans, or a review item that does not exist (400/404)."""


@dataclass(frozen=True)
class Span:
    """An entity: character offsets into the (anonymised) text, end exclusive."""

    start: int
    end: int
    label: str
    score: float | None = None


@dataclass
class RequestLog:
    """One served request, as the server answered it."""

    id: str
    model: str
    model_version: str
    route: str
    task: str
    input_text: str
    output: dict
    latency_ms: float
    status: int = 200
    confidence: float | None = None
    head: str | None = None
    experiment: str | None = None
    variant: str | None = None
    user: str | None = None
    created_at: datetime = field(default_factory=utcnow)


@dataclass
class Feedback:
    """What a client said about one answer: a rating, the right class, or the right entities."""

    request_id: str
    rating: float | None = None
    label: str | None = None
    spans: list[Span] | None = None
    author: str | None = None
    id: int | None = None
    created_at: datetime = field(default_factory=utcnow)


@dataclass
class ReviewItem:
    """A text queued for a person to label or check, with the model's prediction to start from."""

    task: str
    text: str
    labels: list[str]
    prediction: dict
    source: str = "mined"
    priority: float = 0.0
    reason: str = ""
    request_id: str | None = None
    model_version: str | None = None
    queue: str = "default"
    status: str = "pending"
    id: int | None = None
    created_at: datetime = field(default_factory=utcnow)


@dataclass
class Correction:
    """A reviewer's decision on one review item: the final label or entity set."""

    item_id: int
    author: str
    accepted: bool
    label: str | None = None
    spans: list[Span] | None = None
    edits: int = 0
    seconds: float | None = None
    id: int | None = None
    created_at: datetime = field(default_factory=utcnow)
