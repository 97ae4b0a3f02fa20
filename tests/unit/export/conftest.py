"""The command line, in-process, for the export tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from lmforge.cli import app


@pytest.fixture(scope="session")
def cli() -> Callable[..., Result]:
    """`lmforge ARGS...` in-process."""
    return lambda *args: CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="session")
def export(cli) -> Callable[..., Path]:
    """`lmforge export ARGS...`, which must succeed; returns the export folder it prints last."""

    def run(*args) -> Path:
        result = cli("export", *args)
        assert result.exit_code == 0, result.output
        return Path(result.stdout.strip().splitlines()[-1].removeprefix("export folder: "))

    return run
