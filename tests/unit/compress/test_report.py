"""`lmforge compress-report`: one table of every variant against the float model, from real measurements."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from lmforge.cli import app
from lmforge.compress.quantize import QuantizeConfig, quantize
from lmforge.train.finetune import evaluate


def test_the_report_measures_each_variant_and_scores_it_like_evaluate(classifier_folder, tmp_path):
    base = classifier_folder["model"]
    cfg = QuantizeConfig(model=base, method="dynamic", embeddings=True, out=tmp_path / "int8")
    variant = quantize(cfg).model_dir
    runner = CliRunner()
    onnx = tmp_path / "exports/onnx-int8"
    exported = runner.invoke(app, ["export", str(base), "--format", "onnx-int8", "--out", str(onnx)])
    assert exported.exit_code == 0, exported.output
    result = runner.invoke(app, ["compress-report", str(base), str(variant), str(onnx), "--rounds", "2",
                                 "--data", str(classifier_folder["test"]), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads((tmp_path / "r/report.json").read_text())}
    assert list(rows) == ["model", "int8", "exports/onnx-int8"]
    # ONNX Runtime INT8 scores within a few points of the float model on the same rows.
    onnx_accuracy = rows["exports/onnx-int8"]["quality"]["accuracy"]
    assert abs(onnx_accuracy - rows["model"]["quality"]["accuracy"]) < 0.05
    # Quality: the same numbers `lmforge evaluate` gives for each folder.
    for name, folder in (("model", base), ("int8", variant)):
        expected = evaluate(folder, "classify", classifier_folder["test"])
        assert rows[name]["quality"] == expected
    # Size: the weight files on disk; the INT8 folder with INT8 embeddings is smaller.
    size = sum((base / f).stat().st_size for f in ("model.safetensors", "heads.safetensors"))
    assert rows["model"]["size_bytes"] == size
    assert rows["int8"]["size_bytes"] < size
    for row in rows.values():
        assert row["peak_memory_bytes"] > 0 and row["latency_ms"]["1"] > 0 and row["latency_ms"]["32"] > 0
    page = (tmp_path / "r/report.html").read_text()
    assert "data:image/png;base64," in page and "<td>int8</td>" in page
    assert "| int8 |" in (tmp_path / "r/report.md").read_text()


def test_a_language_model_is_scored_by_perplexity_on_its_lineages_tokens(lm_folder, tmp_path):
    variant = quantize(QuantizeConfig(model=lm_folder, method="weight-only", out=tmp_path / "wo")).model_dir
    result = CliRunner().invoke(app, ["compress-report", str(lm_folder), str(variant), "--rounds", "1",
                                      "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "r/report.json").read_text())
    ppl = [row["quality"]["ppl"] for row in rows]
    assert 1 < ppl[0] < 1000 and abs(ppl[1] / ppl[0] - 1) < 0.05
