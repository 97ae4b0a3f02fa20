"""The run's HTML report: one self-contained page built from a run folder's artifacts.

`run_data` reads the artifacts, `figures` draws the charts, `markup` holds the escaping HTML
helpers, `sections` renders one section per lifecycle stage and `page` assembles and writes it.
"""

from lmforge.report.page import build_report

__all__ = ["build_report"]
