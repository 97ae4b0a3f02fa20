"""ExecuTorch export: one clear line when the optional extra is absent; where it is installed, the .pte runs
in the ExecuTorch runtime and matches PyTorch."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest


def test_missing_extra_is_one_line(cli, lm_folder, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "executorch", None)  # find_spec answers None: as if not installed
    result = cli("export", lm_folder, "--format", "executorch", "--out", tmp_path / "et")
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "optional extra 'executorch'" in lines[0] and "lmforge[executorch]" in lines[0]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(
    importlib.util.find_spec("executorch") is None,
    reason="executorch is not installed (optional extra: pip install 'lmforge[executorch]')",
)
def test_pte_runs_in_executorch_runtime(export, classifier_folder, tmp_path):
    from executorch.runtime import Runtime

    out = export(classifier_folder["model"], "--format", "executorch", "--out", tmp_path / "et")
    figures = json.loads((out / "verification.json").read_text())
    assert max(figures["max_abs_diff"].values()) < 1e-4 and figures["argmax_agreement"] == 1.0
    assert Runtime.get().load_program(out / "model.pte").load_method("forward") is not None
