"""The short Markdown report of a curation run, rendered from its stats, and the scorer hook.

Curation knows nothing of where its input came from. A caller that knows the right answers for
its input (the built-in corpus knows every planted duplicate and PII value) passes a `Scorer`:
it reads the finished dataset and returns figures for `stats.json` and a section for the report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Scores:
    """What a scorer found: `figures` go to stats.json under "scores", `section` (Markdown,
    starting with its own "## " heading) is appended to report.md."""

    figures: dict[str, Any]
    section: str


Scorer = Callable[[Path], Scores]
"""scorer(dataset): scores of a dataset folder whose `shards/` and `removed/` are complete."""


def render_report(name: str, stats: dict[str, Any], section: str = "") -> str:
    """The report of the stats.json summary `stats`, with a scorer's `section` (if any) at the end."""
    n_in = stats["input_documents"]
    lines = [
        f"# Curation report: {name}", "",
        f"{n_in:,} input documents: {stats['kept_documents']:,} kept, "
        f"{stats['removed_documents']:,} removed ({_share(stats['removed_documents'], n_in)}).", "",
        "## Steps", "", "| step | in | kept | dropped | seconds | drop reasons | counters |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for step in stats["steps"]:
        lines.append(f"| {step['step']} | {step['in']:,} | {step['kept']:,} | {step['dropped_total']:,} | "
                     f"{step['seconds']:.2f} | {_listing(step['dropped'])} | {_listing(step['counters'])} |")
    lines += ["", "## Removed documents by reason", "", "| reason | documents | share of input |",
              "|---|---:|---:|"]
    for reason, count in sorted(stats["removed_by_reason"].items(), key=lambda kv: -kv[1]):
        lines.append(f"| {reason} | {count:,} | {_share(count, n_in)} |")
    if section:
        lines += ["", section.rstrip("\n")]
    return "\n".join(lines) + "\n"


def _listing(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])) or "-"


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "-"
