"""Bad input to `lmforge export`: one line, status 1, nothing written (the messages of each case are also
in tests/integration/test_bad_input.py's table)."""

from __future__ import annotations

import pytest

from lmforge.export import ExportError
from lmforge.export import run as export_run


def error_line(result) -> str:
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["{model}", "--format", "onnx", "--out", "{tmp}/exists"], "exists: already exists"),
        (
            ["{model}", "--format", "onx", "--out", "{tmp}/new"],
            "unknown export format 'onx'; choose one of onnx,",
        ),
        (
            ["{model}", "--format", "onnx", "--head", "nope", "--out", "{tmp}/new"],
            "no head named 'nope' (heads: lm",
        ),
        (["{tmp}/exists", "--format", "onnx", "--out", "{tmp}/new"], "exists: not a model folder"),
        (["{tmp}/missing", "--format", "onnx", "--out", "{tmp}/new"], "missing: not a model folder"),
    ],
    ids=["out exists", "unknown format", "unknown head", "not a model folder", "missing model folder"],
)
def test_one_line_and_nothing_written(cli, lm_folder, tmp_path, args, expected):
    existing = tmp_path / "exists"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    result = cli("export", *(a.format(model=lm_folder, tmp=tmp_path) for a in args))
    assert expected in error_line(result)
    assert list(tmp_path.iterdir()) == [existing]
    assert [p.name for p in existing.iterdir()] == ["keep.txt"]


def test_failure_midway_leaves_nothing(cli, lm_folder, tmp_path, monkeypatch):
    """An export that fails after writing files leaves neither the folder nor its temporary sibling."""

    def half(sig, folder, model):
        (folder / "model.pt").write_bytes(b"half")
        raise ExportError("broken on purpose")

    monkeypatch.setitem(export_run.WRITERS, "torchscript", half)
    result = cli("export", lm_folder, "--format", "torchscript", "--out", tmp_path / "exports" / "ts")
    assert error_line(result) == "error: broken on purpose"
    assert list((tmp_path / "exports").iterdir()) == []
