"""Running the lifecycle's stages in order: skip the complete ones, show progress, log key figures.

A stage is complete when every artifact it recorded in `logs/stages.jsonl` has its manifest (a
manifest is written last, so a folder with one is whole). Stage functions are idempotent: each
builds only the artifacts that are missing, and the training inside them resumes from its
checkpoints, so killing a run anywhere and starting it again ends in the same folders.
The log is also the report's index: one JSON line per completed stage (the last line of a stage
wins), with its wall time, its one-line key figure, its numbers and its artifacts.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge.artifacts import MANIFEST
from lmforge.pipeline.config import RunConfig

STAGE_LOG = Path("logs") / "stages.jsonl"


@dataclass
class Outcome:
    """What a stage made (artifact paths relative to the run folder) and its key figures."""

    artifacts: dict[str, str]
    figure: str
    figures: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunContext:
    """What every stage sees: the settings, the run folder, and the earlier stages' outcomes."""

    cfg: RunConfig
    root: Path
    say: Callable[[str], None]
    outcomes: dict[str, Outcome] = field(default_factory=dict)

    def path(self, stage: str, artifact: str) -> Path:
        """An earlier stage's artifact, as a path one can open."""
        return self.root / self.outcomes[stage].artifacts[artifact]

    def relative(self, path: Path) -> str:
        return str(path.relative_to(self.root))


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[RunContext], Outcome]


def read_json(path: Path) -> Any:
    """An artifact's JSON file (a stage reads its figures back from what it wrote)."""
    return json.loads(path.read_text(encoding="utf-8"))


def complete(path: Path) -> bool:
    """A folder artifact with its manifest, or a file artifact that exists."""
    return (path / MANIFEST).is_file() if path.is_dir() else path.is_file()


def recorded(root: Path) -> dict[str, dict[str, Any]]:
    """The last log line of every stage of the run in `root`."""
    log = root / STAGE_LOG
    if not log.is_file():
        return {}
    lines: dict[str, dict[str, Any]] = {}
    for line in log.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a kill; its stage runs again
        lines[entry["stage"]] = entry
    return lines


def run_stages(stages: list[Stage], ctx: RunContext) -> None:
    """Each stage in turn (up to cfg.stop_after), one progress line before and one after."""
    done = recorded(ctx.root)
    started = time.monotonic()
    for number, stage in enumerate(stages, 1):
        prefix = f"[{number:>2}/{len(stages)} {_clock(time.monotonic() - started)}] {stage.name:<15}"
        entry = done.get(stage.name)
        if entry is not None and all(complete(ctx.root / p) for p in entry["artifacts"].values()):
            ctx.outcomes[stage.name] = Outcome(entry["artifacts"], entry["figure"], entry["figures"])
            ctx.say(f"{prefix} done earlier: {entry['figure']}")
        else:
            ctx.say(f"{prefix} ...")
            began = time.monotonic()
            outcome = stage.run(ctx)
            seconds = time.monotonic() - began
            ctx.outcomes[stage.name] = outcome
            _append(ctx.root, {"stage": stage.name, "seconds": round(seconds, 1), "figure": outcome.figure,
                               "figures": outcome.figures, "artifacts": outcome.artifacts})
            ctx.say(f"{prefix} {outcome.figure} ({seconds:.0f} s)")
        if stage.name == ctx.cfg.stop_after:
            return


def _append(root: Path, entry: dict[str, Any]) -> None:
    """One line; after a line a kill cut short, on a line of its own (else both would be lost)."""
    log = root / STAGE_LOG
    log.parent.mkdir(parents=True, exist_ok=True)
    torn = False
    if log.is_file() and log.stat().st_size > 0:
        with open(log, "rb") as handle:
            handle.seek(-1, 2)
            torn = handle.read(1) != b"\n"
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(("\n" if torn else "") + json.dumps(entry) + "\n")


def _clock(seconds: float) -> str:
    return f"{int(seconds // 60):02d}:{int(seconds % 60):02d}"
