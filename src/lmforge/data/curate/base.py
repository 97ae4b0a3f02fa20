"""The contract every curation step keeps: one document in, kept documents or a drop reason out.

A document is a dict `{"id", "text", "source", "metadata"}`. A step may rewrite the text (clean,
anonymise), split one document into several (length), or drop it with a short snake_case
reason (`gopher_short_doc`, `lang_below_threshold`, ...). The runner counts, per step, what came
in, what was kept and every drop reason, so that input = kept + removed holds exactly; steps
only add their own counters (e.g. PII found per type) through `counters`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Drop:
    """A removed document's reason, named after the rule that removed it."""

    reason: str


class Step(Protocol):
    """A per-document curation step; `name` keys its stats and its settings."""

    name: str

    def apply(self, doc: dict, counters: Counter) -> list[dict] | Drop:
        """Return the documents to pass on (usually `[doc]`) or a `Drop`."""
        ...
