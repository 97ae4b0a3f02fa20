"""Reading a run folder: the stage index and the files the stages left.

The report is built from these files only, never from a run held in memory, so it can be
rebuilt for any run folder at any time, finished, partial or copied from another machine.
Folder names come from the index (`logs/stages.jsonl`), never from guessing the layout.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmforge.artifacts import MANIFEST
from lmforge.errors import READ_ERRORS, LmforgeError, unreadable

INDEX = Path("logs") / "stages.jsonl"


class ReportDataError(LmforgeError):
    """An artifact the report needs is missing or not what its stage writes; its section says so
    in one line and the rest of the report is still built."""


@dataclass(frozen=True)
class Stage:
    """The last line of a stage in the index: a re-run stage's earlier lines describe folders
    that the re-run has replaced."""

    name: str
    seconds: float | None
    figure: str
    artifacts: dict[str, str]
    """key -> path relative to the run folder."""
    figures: dict[str, Any]


@dataclass(frozen=True)
class RunData:
    folder: Path
    stages: dict[str, Stage]
    """In the order the stages first completed, each with its last record."""
    index_problems: list[str]
    """Lines of the index that could not be read (skipped, and shown in the report)."""

    @property
    def name(self) -> str:
        return self.folder.name

    def artifact(self, stage: str, key: str) -> Path:
        """The folder (or file) a recorded stage wrote under `key`."""
        recorded = self.stages[stage].artifacts
        if not isinstance(recorded.get(key), str):
            raise ReportDataError(f"{INDEX}: stage {stage!r} records no {key!r} artifact "
                                  f"(it records {', '.join(map(str, recorded)) or 'none'})")
        return self.folder / recorded[key]

    def relative(self, path: str | Path) -> str:
        """`path` relative to the run folder where it lies inside it, else as it is: manifests
        record absolute paths, which are long and say nothing a reader of this run needs."""
        path = Path(path)
        try:
            return str(path.resolve().relative_to(self.folder)) if path.is_absolute() else str(path)
        except ValueError:
            return str(path)


def read_run(folder: str | Path) -> RunData:
    """The run's stage index; a run without one has simply not completed a stage yet."""
    folder = Path(folder).resolve()
    index = folder / INDEX
    if not index.is_file():
        return RunData(folder, {}, [])
    records, problems = read_jsonl(index)
    stages: dict[str, Stage] = {}
    for number, record in records:
        name = record.get("stage")
        if not isinstance(name, str):
            problems.append(f"{INDEX}:{number}: no stage name")
            continue
        seconds = record.get("seconds")
        stages[name] = Stage(
            name,
            float(seconds) if isinstance(seconds, int | float) else None,
            str(record.get("figure", "")),
            _mapping(record.get("artifacts")),
            _mapping(record.get("figures")),
        )
    return RunData(folder, stages, problems)


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def read_json(path: Path) -> Any:
    """A JSON file's content; a missing or malformed one is a ReportDataError naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except READ_ERRORS as err:
        raise ReportDataError(unreadable(path, err, "a JSON file")) from None
    except json.JSONDecodeError as err:
        raise ReportDataError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None


def read_jsonl(path: Path) -> tuple[list[tuple[int, dict[str, Any]]], list[str]]:
    """(line number, object) of every readable line, and a note per line that is not a JSON object.

    Lines are skipped rather than fatal: these files are appended to while a stage runs, so a
    killed stage can leave half a last line, and everything before it is still true.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except READ_ERRORS as err:
        raise ReportDataError(unreadable(path, err, "a JSON-lines file")) from None
    records, problems = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            problems.append(f"{path.name}:{number}: not valid JSON ({err.msg}); skipped")
            continue
        if isinstance(record, dict):
            records.append((number, record))
        else:
            problems.append(f"{path.name}:{number}: not a JSON object; skipped")
    return records, problems


def manifests(folder: Path) -> list[tuple[Path, dict[str, Any] | None]]:
    """Every artifact folder under the run with its manifest (None: unreadable), sorted by path.

    Checkpoints are left out (every step folder would be a row of the same lineage), and so are
    hidden folders: those are writes in progress, not artifacts.
    """
    found = []
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        skip = {"checkpoints"} if here == folder else set()
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in skip)
        if MANIFEST in files:
            try:
                manifest = read_json(here / MANIFEST)
            except ReportDataError:
                manifest = None
            found.append((here, manifest if isinstance(manifest, dict) else None))
    return sorted(found, key=lambda item: item[0])
