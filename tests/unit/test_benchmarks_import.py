"""Every benchmark imports: a renamed or moved lmforge API breaks here, not in the next benchmark run."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
OPTIONAL = ("litserve",)
"""Packages of the `bench` extra; only the peer process that wraps one imports it."""
LIBRARIES = ("realdata", "serve_load")
"""Modules the benchmarks share, with no command of their own."""


@pytest.mark.parametrize("name", sorted(p.stem for p in BENCHMARKS.glob("*.py")))
def test_benchmark_imports_and_has_a_main(name, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name in OPTIONAL:
            pytest.skip(f"needs {err.name} (the bench extra)")
        raise
    try:
        assert callable(getattr(module, "main", None)) or name in LIBRARIES
    finally:
        sys.modules.pop(name, None)
