"""The report's charts as PNG bytes (matplotlib, no display, no pyplot state).

Labels come from artifacts (removal reasons, variant names), so mathtext is off while drawing: a
name with a `$` in it is text, not a formula that fails to parse.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure

WIDTH = 7.5
"""Inches; at DPI this is about the page's text width."""
DPI = 110


@contextmanager
def plain_text() -> Iterator[None]:
    """Every label drawn inside is literal text (also for charts drawn by other modules)."""
    with matplotlib.rc_context({"text.parse_math": False}):
        yield


def _png(height: float, draw: Callable[[Figure], None]) -> bytes:
    with plain_text():
        figure = Figure(figsize=(WIDTH, height))
        draw(figure)
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def funnel_png(removed_by_reason: dict[str, int]) -> bytes:
    """Documents removed per reason, the biggest on top."""
    ranked = sorted(removed_by_reason.items(), key=lambda item: item[1])

    def draw(figure: Figure) -> None:
        axes = figure.add_subplot()
        axes.barh([name for name, _ in ranked], [n for _, n in ranked], color="#b5523b")
        axes.set_xlabel("documents removed")
        axes.set_title("removed by reason")

    return _png(1.2 + 0.28 * len(ranked), draw)


def curves_png(train: Sequence[dict[str, Any]], evaluations: Sequence[dict[str, Any]]) -> bytes:
    """Train loss with the validation points over it, and the learning rate, against the step."""

    def draw(figure: Figure) -> None:
        loss, lr = figure.subplots(1, 2)
        loss.plot([r["step"] for r in train], [r["loss"] for r in train], label="train loss", lw=1)
        loss.plot([r["step"] for r in evaluations], [r["val_loss"] for r in evaluations], "o",
                  label="validation loss")
        loss.set_xlabel("step")
        loss.set_ylabel("loss")
        loss.legend()
        lr.plot([r["step"] for r in train], [r["lr"] for r in train], lw=1, color="#555")
        lr.set_xlabel("step")
        lr.set_ylabel("learning rate")
        lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))

    return _png(3.2, draw)


def comparison_png(rows: Sequence[dict[str, Any]]) -> bytes:
    """Pretrained against from-scratch, a pair of bars per (task, metric)."""

    def draw(figure: Figure) -> None:
        axes = figure.add_subplot()
        where = range(len(rows))
        axes.bar([x - 0.2 for x in where], [r["pretrained"] for r in rows], 0.4, label="pretrained")
        axes.bar([x + 0.2 for x in where], [r["scratch"] for r in rows], 0.4, label="from scratch")
        axes.set_xticks(list(where), [f"{r['task']}\n{r['metric']}" for r in rows])
        axes.set_ylabel("test metric")
        axes.legend()

    return _png(3.2, draw)


def latency_png(latencies_ms: Sequence[float], marks: dict[str, float]) -> bytes:
    """Client-side latency histogram with its percentiles as vertical lines."""

    def draw(figure: Figure) -> None:
        axes = figure.add_subplot()
        axes.hist(latencies_ms, bins=min(40, max(5, len(latencies_ms) // 10)), color="#4c72b0")
        for (name, value), style in zip(marks.items(), ("--", "-.", ":", "-"), strict=False):
            axes.axvline(value, color="#333", ls=style, label=f"{name} {value:.1f} ms")
        axes.set_xlabel("latency (ms)")
        axes.set_ylabel("requests")
        if marks:
            axes.legend()

    return _png(3.0, draw)


def intervals_png(estimates: Sequence[dict[str, Any]]) -> bytes:
    """Each variant's mean with its interval, one panel per metric (metrics have their own units)."""
    metrics = list(dict.fromkeys(e["metric"] for e in estimates))

    def draw(figure: Figure) -> None:
        for axes, metric in zip(figure.subplots(1, len(metrics), squeeze=False)[0], metrics, strict=True):
            _intervals(axes, [e for e in estimates if e["metric"] == metric])
            axes.set_title(metric)

    return _png(2.8, draw)


def _intervals(axes: Axes, estimates: Sequence[dict[str, Any]]) -> None:
    """NaN in the analysis (no value to estimate) is null in its JSON: such a point is left out."""
    names = [e["variant"] for e in estimates]
    for x, e in enumerate(estimates):
        low, high = e["ci"]
        if None in (e["mean"], low, high):
            continue
        axes.errorbar([x], [e["mean"]], yerr=[[e["mean"] - low], [high - e["mean"]]], fmt="o", capsize=4)
    axes.set_xticks(range(len(names)), names)
    axes.set_xlim(-0.5, len(names) - 0.5)
