"""The stage runner: a stage runs when its log line or any of its artifacts is missing, and is
skipped (its outcome read back from the log) when both are there; a line cut short by a kill
does not count; `stop_after` ends the run after that stage."""

from __future__ import annotations

import json
from pathlib import Path

from lmforge.artifacts import write_manifest
from lmforge.pipeline.config import RunConfig
from lmforge.pipeline.stages import STAGE_LOG, Outcome, RunContext, Stage, run_stages


class Recorder:
    """Stages that write one artifact folder each and count their calls."""

    def __init__(self, root: Path):
        self.root, self.calls = root, []

    def stage(self, name: str) -> Stage:
        def run(ctx: RunContext) -> Outcome:
            self.calls.append(name)
            folder = ctx.root / name
            folder.mkdir(exist_ok=True)
            write_manifest(folder, name)
            return Outcome({"folder": name}, f"{name} figure", {"n": len(self.calls)})

        return Stage(name, run)


def run(root: Path, recorder: Recorder, stop_after: str | None = None) -> RunContext:
    ctx = RunContext(RunConfig(stop_after=stop_after), root, say=lambda line: None)
    run_stages([recorder.stage(n) for n in ("a", "b", "c")], ctx)
    return ctx


def test_a_finished_stage_is_skipped_and_its_outcome_read_back(tmp_path):
    recorder = Recorder(tmp_path)
    run(tmp_path, recorder)
    again = run(tmp_path, recorder)
    assert recorder.calls == ["a", "b", "c"]
    assert again.outcomes["b"] == Outcome({"folder": "b"}, "b figure", {"n": 2})


def test_a_stage_whose_artifact_is_gone_runs_again(tmp_path):
    recorder = Recorder(tmp_path)
    run(tmp_path, recorder)
    (tmp_path / "b" / "manifest.json").unlink()  # as if the folder had been left half-written
    run(tmp_path, recorder)
    assert recorder.calls == ["a", "b", "c", "b"]


def test_a_line_cut_short_by_a_kill_does_not_count(tmp_path):
    recorder = Recorder(tmp_path)
    run(tmp_path, recorder, stop_after="b")
    log = tmp_path / STAGE_LOG
    lines = log.read_text().splitlines()
    log.write_text(lines[0] + "\n" + lines[1][:20])
    run(tmp_path, recorder)
    assert recorder.calls == ["a", "b", "b", "c"]
    assert [json.loads(line)["stage"] for line in log.read_text().splitlines()[2:]] == ["b", "c"]


def test_stop_after_ends_the_run_after_that_stage(tmp_path):
    recorder = Recorder(tmp_path)
    ctx = run(tmp_path, recorder, stop_after="a")
    assert recorder.calls == ["a"] and list(ctx.outcomes) == ["a"]
