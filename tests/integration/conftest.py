"""Markers of the integration tests (pyproject.toml lists the suite-wide ones)."""

from __future__ import annotations


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "demo_artifacts: a README command that reads what `make demo` leaves in runs/quickstart/ "
                   "(the test builds a tiny stand-in; deselect with -m 'not demo_artifacts')")
