"""The request / feedback / review log of the serving and improvement stages.

The server logs each request it answered (text already PII-anonymised) and the feedback clients
send on it; improvement mines those records into review queues, and reviewers' corrections come
back here to become training data. SQLite by default, PostgreSQL by URL, the schema created and
upgraded by the Alembic migrations shipped in this package (`open_store` runs them).
"""

from __future__ import annotations

from lmforge.records.store import Store, check_spans, open_store
from lmforge.records.types import (
    Correction,
    Feedback,
    InvalidCorrection,
    RecordsError,
    RequestLog,
    ReviewItem,
    Span,
    UnknownRequest,
    utcnow,
)

__all__ = [
    "Correction",
    "Feedback",
    "InvalidCorrection",
    "RecordsError",
    "RequestLog",
    "ReviewItem",
    "Span",
    "Store",
    "UnknownRequest",
    "check_spans",
    "open_store",
    "utcnow",
]
