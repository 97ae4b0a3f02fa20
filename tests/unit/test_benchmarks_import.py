"""Every benchmark imports: a renamed or moved lmforge API breaks here, not in the next benchmark run."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
LIBRARIES = ("realdata", "serve_load")
"""Modules the benchmarks share, with no command of their own."""


@pytest.mark.parametrize("name", sorted(p.stem for p in BENCHMARKS.glob("*.py")))
def test_benchmark_imports_and_has_a_main(name, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    module = importlib.import_module(name)
    try:
        assert callable(getattr(module, "main", None)) or name in LIBRARIES
    finally:
        sys.modules.pop(name, None)
