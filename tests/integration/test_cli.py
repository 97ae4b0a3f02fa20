"""The command line as a user meets it: the first half of the main job, generation, and one-line
errors (tests/integration/test_lifecycle.py runs the whole of `lmforge run`)."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from processes import run_bounded

pytestmark = pytest.mark.slow
TINY_RUN = ["--set", "corpus.size_mb=0.4", "--set", "tokenizer.vocab_size=1000", "--set", "train.steps=100",
            "--set", "train.batch_size=8", "--set", "train.eval_every=20", "--set", "train.peak_gflops=100",
            "--set", "sample_tokens=12", "--set", "stop_after=pretrain"]


def lmforge(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The CLI as a user runs it, in a session of its own (the whole tree dies on a timeout)."""
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    return run_bounded([sys.executable, "-m", "lmforge", *args], cwd=cwd, env=env, capture_output=True,
                       text=True, timeout=600)


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    cwd = tmp_path_factory.mktemp("cli")
    return cwd, lmforge("run", *TINY_RUN, cwd=cwd)


def test_run_builds_the_whole_chain(quickstart):
    cwd, proc = quickstart
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = dict(line.split(": ", 1) for line in proc.stdout.splitlines() if ": " in line)
    pretrain = next(line for line in proc.stdout.splitlines()
                    if "] pretrain" in line and "perplexity" in line)
    before, after = (float(x.replace(",", "")) for x in
                     pretrain.split("validation perplexity ")[1].split(" (")[0].split(" -> "))
    assert after < before / 3
    run = cwd / "runs" / "quickstart"
    assert {p.name for p in run.iterdir()} >= {"datasets", "tokenizers", "checkpoints", "models", "logs"}
    assert not (run / "models" / "quickstart-classify").exists()  # stop_after=pretrain
    model = run / "models" / "quickstart"
    manifest = json.loads((model / "manifest.json").read_text())
    assert manifest["config"]["train"]["steps"] == 100
    assert [Path(p["path"]).name for p in manifest["parents"]] == ["tokens", "default"]
    assert lines["sample"].startswith("The")


def test_rerun_skips_finished_stages(quickstart):
    cwd, _ = quickstart
    proc = lmforge("run", *TINY_RUN, cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-2000:]
    finished = [line for line in proc.stdout.splitlines() if "done earlier" in line]
    stages = [line.split("]")[1].split()[0] for line in finished]
    assert stages == ["corpus", "curate", "tokenizer", "pretrain"]
    assert "step/s" not in proc.stderr  # nothing trained again


def test_generate_is_reproducible_with_a_seed(quickstart):
    cwd, _ = quickstart
    model = cwd / "runs" / "quickstart" / "models" / "quickstart"
    args = ["generate", str(model), "--prompt", "The", "--max-tokens", "8", "--seed", "3"]
    first, second = lmforge(*args, cwd=cwd), lmforge(*args, cwd=cwd)
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout and first.stdout.startswith("The")


def test_model_info_prints_guide_sizes(tmp_path):
    """The printed figures of base-768, by the formulas of tests/unit/model/test_presets.py.

    D 768, L 12, F 3072, V 32000, T = M = 512, K = 1024, H 12, xl positions.
    """
    proc = lmforge("model", "info", "base-768", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = dict(line.split("  ", 1) for line in proc.stdout.splitlines())
    rows = {name.strip(): value.strip() for name, value in rows.items()}
    d, layers, ff, vocab, t, k, heads = 768, 12, 3072, 32000, 512, 1024, 12
    w_r = layers * d * d
    non_embedding = layers * (4 * d + 4 * (d * d + d) + 2 * d * ff + ff + d + d * d + 2 * d) + 2 * d
    total = non_embedding + vocab * d
    flops = 6 * (non_embedding - w_r + vocab * d) + layers * (12 * k * d + 12 * d * d + 6 * k * d + 8 * d * d)
    per_layer = 4 * k * d + 4 * t * d + 2 * t * ff + 3 * heads * t * k
    activations = 4 * (layers * per_layer + t * d + 2 * t * vocab)
    assert (total, flops) == (116_728_320, 969_329_664)
    assert rows["preset"] == "base-768" and rows["position"] == "xl"
    assert rows["parameters"] == f"{total / 1e6:.2f} M ({total:,})" == "116.73 M (116,728,320)"
    assert rows["non embedding parameters"] == f"{non_embedding / 1e6:.2f} M ({non_embedding:,})"
    assert rows["embedding parameters"] == "24.58 M (24,576,000)"
    assert rows["position parameters"] == f"{(w_r + 2 * layers * d) / 1e6:.2f} M ({w_r + 2 * layers * d:,})"
    assert rows["parameter bytes fp32"] == f"{4 * total / 2**20:.1f} MiB" == "445.3 MiB"
    assert rows["training state bytes"] == f"{16 * total / 2**30:.3f} GiB" == "1.739 GiB"
    assert rows["activation bytes"] == f"{activations / 2**30:.3f} GiB" == "1.319 GiB"
    assert rows["flops per token"] == f"{flops / 1e6:.1f} MFLOP" == "969.3 MFLOP"


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def test_bad_inputs_fail_with_one_line(tmp_path):
    assert "no.yaml: no such file" in one_line_error(lmforge("pretrain", "no.yaml", cwd=tmp_path))
    assert "'train.lrr'" in one_line_error(lmforge("run", "--set", "train.lrr=1", cwd=tmp_path))
    assert "train.steps" in one_line_error(lmforge("run", "--set", "train.steps=x", cwd=tmp_path))
    assert "valid presets" in one_line_error(lmforge("model", "info", "giant", cwd=tmp_path))
    assert "not a model folder" in one_line_error(lmforge("generate", str(tmp_path), cwd=tmp_path))


def test_malformed_jsonl_is_named_and_nothing_is_damaged(tmp_path):
    source = tmp_path / "mine.jsonl.gz"
    with gzip.open(source, "wt") as handle:
        handle.write('{"text": "fine"}\n{"text": broken\n')
    error = one_line_error(lmforge("run", "--set", f"corpus.sources=['{source}']", cwd=tmp_path))
    assert "mine.jsonl.gz:2" in error
    dataset = tmp_path / "runs" / "quickstart" / "datasets" / "default"
    assert not (dataset / "documents.jsonl.gz").exists() and not (dataset / "manifest.json").exists()


def test_import_layers_of_design_md_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.run([str(lint)], cwd=repo, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
