"""What every `lmforge` verb shares: the one-line error guard, typed option values, common options."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Any

import typer

from lmforge.errors import LmforgeError

ConfigArg = Annotated[Path | None, typer.Argument(help="YAML config file.", show_default=False)]
PrintOpt = Annotated[bool, typer.Option("--print-config", help="Print the resolved config, every key "
                                                               "with its help, and exit.")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override a setting: KEY=VALUE "
                                                       "(dotted keys, e.g. train.lr=3e-4). Repeatable.")]
ResumeOpt = Annotated[str, typer.Option(help="auto (newest valid checkpoint), none, or a checkpoint folder.")]
NprocOpt = Annotated[int, typer.Option(min=1, help="Worker processes on this machine (torchrun); the "
                                                   "`parallel` section says how they split the work.")]
DeviceOpt = Annotated[str, typer.Option(help="auto (CUDA when present), cpu, cuda or cuda:N.")]


def guarded(func):
    """Turn the project's own errors (`LmforgeError`) into `error: <one line>` and exit status 1.

    A message that spans lines (a quoted value, a library's report inside it) is joined into one:
    one line is what scripts and the tests rely on.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except LmforgeError as err:
            line = " ".join(part.strip() for part in str(err).splitlines() if part.strip())
            typer.secho(f"error: {line}", fg=typer.colors.RED, err=True)
            raise typer.Exit(1) from None

    return wrapper


def given(**options: Any) -> dict[str, Any]:
    """The options a user gave, as a nested dict of typed values for `config.load(values=...)`:
    None (not given) is left out, so the config file's or `--set`'s value stands."""
    values: dict[str, Any] = {}
    for key, value in options.items():
        if isinstance(value, dict):
            value = given(**value)
        if value is not None and value != {}:
            values[key] = value
    return values
