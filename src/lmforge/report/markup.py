"""The few HTML pieces the report is made of, escaping everything that is not built here.

Every string an artifact holds (a stage's figure, a removal reason, a variant name, a path)
may contain markup; the helpers escape any value that is not already an `Html` fragment, so a
section cannot forget to.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Sequence
from typing import Any


class Html(str):
    """A fragment that is safe to embed as it is: built by these helpers, never read from a file."""


def text(value: Any) -> str:
    """How a value from an artifact reads in the report: four significant digits, or whole numbers
    from 1,000 up (counts in full), null and NaN as '-', a mapping as 'key value, ...'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{key} {text(item)}" for key, item in value.items())
    return str(value)


def esc(value: Any) -> Html:
    return value if isinstance(value, Html) else Html(html.escape(text(value)))


def join(parts: Iterable[Any], separator: str = "") -> Html:
    return Html(separator.join(esc(part) for part in parts))


def tag(name: str, *children: Any, cls: str | None = None) -> Html:
    attributes = f' class="{cls}"' if cls else ""
    return Html(f"<{name}{attributes}>{join(children)}</{name}>")


def table(headers: Sequence[Any], rows: Iterable[Sequence[Any]]) -> Html:
    """Numbers are right-aligned (class `num`), so columns of figures line up by their digits."""
    head = tag("tr", *(tag("th", header) for header in headers))
    body = [tag("tr", *(tag("td", cell, cls=_cell_class(cell)) for cell in row)) for row in rows]
    return tag("table", tag("thead", head), tag("tbody", *body))


def _cell_class(cell: Any) -> str | None:
    return "num" if isinstance(cell, int | float) and not isinstance(cell, bool) else None


def facts(pairs: Iterable[tuple[str, Any]]) -> Html:
    """A short list of 'name: value' lines, for a section's headline figures."""
    return tag("dl", *(join([tag("dt", name), tag("dd", value)]) for name, value in pairs))


def image(png: bytes, alt: str) -> Html:
    """The PNG inline as a data: URI: the page must open on its own, with no file beside it."""
    data = base64.b64encode(png).decode("ascii")
    return Html(f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">')


def not_run(stage: str) -> Html:
    return tag("p", "not run yet (no ", tag("code", stage), " stage in logs/stages.jsonl)", cls="not-run")


def note(message: Any) -> Html:
    return tag("p", message, cls="note")
