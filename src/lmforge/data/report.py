"""The short Markdown report of a curation run, rendered from its stats alone."""

from __future__ import annotations

from typing import Any


def render_report(name: str, stats: dict[str, Any]) -> str:
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
    if stats.get("scores"):
        lines += ["", "## Against the planted ground truth", "", *_score_lines(stats["scores"])]
    return "\n".join(lines) + "\n"


def _score_lines(scores: dict[str, Any]) -> list[str]:
    lines = ["| check | recall | precision | planted |", "|---|---:|---:|---:|"]
    for key in ("exact_dedup", "near_dedup"):
        s = scores[key]
        lines.append(f"| {key.replace('_', ' ')} | {_pct(s['recall'])} | {_pct(s['precision'])} | "
                     f"{s['planted']} ({s['not_reached']} removed earlier) |")
    quality = scores["quality"]
    lines.append(f"| low quality / boilerplate filtered | {_pct(quality['recall'])} | "
                 f"{_pct(quality['precision'])} | {quality['planted_bad']} |")
    pii = scores["pii"]
    for kind, recall in pii["recall"].items():
        lines.append(f"| PII {kind} | {_pct(recall)} | | {pii['planted'][kind]} |")
    lines += ["", "Placeholder precision: " + ", ".join(f"{k} {_pct(v)}" for k, v in
                                                          pii["placeholder_precision"].items()),
              f"Normal documents removed by a filter: {_pct(quality['normal_removed'])}. "
              f"Language-ID accuracy: {_pct(scores['language_accuracy'])}. {pii['note']}."]
    return lines


def _listing(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])) or "-"


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "-"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"
