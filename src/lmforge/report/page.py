"""`lmforge report RUN`: the run's one HTML page, written to `RUN/report/index.html`.

The page stands alone: charts are inline PNGs, the style sheet is inline, there is no script,
and its content security policy forbids loading anything else, so it opens the same from a
laptop, an archive or a CI artifact, with no network.
"""

from __future__ import annotations

from pathlib import Path

from lmforge.artifacts import atomic_write_text
from lmforge.report.markup import Html, esc, join, tag
from lmforge.report.run_data import RunData, read_run
from lmforge.report.sections import SECTIONS, guarded

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}h3{font-size:1.05em}
nav a{margin-right:1em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
dl{display:grid;grid-template-columns:max-content auto;gap:.15em 1em}dt{color:#555}dd{margin:0}
img{max-width:100%;height:auto;display:block;margin:.6em 0}
.not-run{color:#888;font-style:italic}.note{color:#555}.decision{font-size:1.1em}
code{background:#f4f4f4;padding:0 .2em}
"""

POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
"""Nothing but the page itself: an image or style that points elsewhere is refused by the browser."""


def build_report(run: str | Path) -> Path:
    """Write `run/report/index.html` from the run folder's artifacts and return its path."""
    data = read_run(run)
    path = data.folder / "report" / "index.html"
    atomic_write_text(path, page(data))
    return path


def page(data: RunData) -> str:
    """Every section, in the order of the lifecycle, each shown or saying it has not run yet."""
    title = f"lmforge run {data.name}"
    contents = tag("nav", *(Html(f'<a href="#{anchor}">{esc(name)}</a>') for anchor, name, _ in SECTIONS))
    sections = [Html(f'<section id="{anchor}">{tag("h2", name)}{guarded(render, data)}</section>')
                for anchor, name, render in SECTIONS]
    head = join([
        Html('<meta charset="utf-8">'),
        Html(f'<meta http-equiv="Content-Security-Policy" content="{POLICY}">'),
        Html('<meta name="viewport" content="width=device-width, initial-scale=1">'),
        Html('<link rel="icon" href="data:,">'),  # no request for /favicon.ico
        tag("title", title),
        Html(f"<style>{STYLE}</style>"),
    ])
    body = join([tag("h1", title), tag("p", "run folder ", tag("code", data.folder)), contents, *sections])
    return f'<!doctype html>\n<html lang="en"><head>{head}</head><body>{body}</body></html>\n'
