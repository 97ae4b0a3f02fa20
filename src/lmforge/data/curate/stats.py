"""Per-step accounting: what each step saw, kept and dropped (by reason), and how long it took.

Stats of shards processed in different workers are merged by summing, so the totals do not
depend on how the work was split. The invariant the curation stage checks on every run, by id:
every input document is either kept or removed with a reason, exactly once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class StepStats:
    """Counts of one step over one or more shards."""

    name: str
    seen: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    counters: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    def merge(self, other: StepStats) -> None:
        self.seen += other.seen
        self.kept += other.kept
        self.dropped.update(other.dropped)
        self.counters.update(other.counters)
        self.seconds += other.seconds

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.name, "in": self.seen, "kept": self.kept,
                "dropped": dict(sorted(self.dropped.items())), "dropped_total": sum(self.dropped.values()),
                "counters": dict(sorted(self.counters.items())), "seconds": round(self.seconds, 3)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepStats:
        return cls(data["step"], data["in"], data["kept"], Counter(data["dropped"]),
                   Counter(data["counters"]), data["seconds"])


def merge_all(parts: list[list[dict[str, Any]]]) -> list[StepStats]:
    """Sum per-shard stats lists (same steps in the same order) into one list."""
    merged: dict[str, StepStats] = {}
    for part in parts:
        for entry in part:
            stats = StepStats.from_dict(entry)
            if stats.name in merged:
                merged[stats.name].merge(stats)
            else:
                merged[stats.name] = stats
    return list(merged.values())


class AccountingError(RuntimeError):
    """Documents went missing or were counted twice: a bug, never a data problem."""


def check_accounting(input_ids: Iterable[str], kept_ids: Iterable[str], removed_ids: Iterable[str]) -> None:
    """Raise unless the kept and the removed ids together are the input ids, each exactly once.

    Ids, not counts: counts still balance when one document is lost and another is written
    twice, or kept and also recorded as removed. A kept document split into chunks counts once,
    under its input id. Multisets are compared, so the check is one Counter per side.
    """
    expected = Counter(input_ids)
    kept, removed = Counter(kept_ids), Counter(removed_ids)
    if kept + removed == expected:
        return
    got = kept + removed
    raise AccountingError(
        f"accounting broken: {expected.total()} input documents, {kept.total()} kept + "
        f"{removed.total()} removed = {got.total()}; lost: {_some(expected - got)}; written twice or "
        f"never input: {_some(got - expected)}; kept and removed: {_some(kept & removed)}")


def _some(ids: Counter, limit: int = 5) -> str:
    names = sorted(ids)
    return (", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")
            if names else "none")
