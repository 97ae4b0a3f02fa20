"""Every parallel layout trains exactly like one process: real torchrun workers over gloo.

Each layout (up to 3-D: FSDP2 x TP x PP over 8 processes) runs 4 steps of a 2-layer model
(dropout off, float32) on the same global batch of 4 sequences; its per-step losses and validation losses must equal the single-process run's
within 1e-5. Checkpoints written at one layout must resume at another to the same trajectory.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from lmforge.train import pretrain
from lmforge.train.checkpoint import latest_checkpoint
from lmforge.train.metrics import read_metrics

pytestmark = pytest.mark.slow

LAYOUTS = {
    "ddp": (2, {"dp_replicate": 2, "dp_shard": 1}, {}),
    "ddp-accumulating": (2, {"dp_replicate": 2, "dp_shard": 1}, {"micro_batch_size": 1}),
    "fsdp": (2, {"dp_shard": 2}, {}),
    "fsdp-masked-lm": (2, {"dp_shard": 2}, {"objective": "masked"}),
    "tp": (2, {"tp": 2, "dp_shard": 1}, {}),
    "pp-gpipe": (2, {"pp": 2, "dp_shard": 1, "pp_schedule": "gpipe"}, {}),
    "pp-1f1b": (2, {"pp": 2, "dp_shard": 1, "pp_schedule": "1f1b", "microbatches": 4}, {}),
    "fsdp-x-tp": (4, {"dp_shard": 2, "tp": 2}, {}),
    "ddp-x-pp": (4, {"dp_replicate": 2, "dp_shard": 1, "pp": 2}, {}),
    "tp-x-pp": (4, {"tp": 2, "pp": 2, "dp_shard": 1}, {}),
    "fsdp-x-tp-x-pp": (8, {"dp_shard": 2, "tp": 2, "pp": 2}, {}),
}


def make_config(pretrain_config, out: Path, parallel: dict | None = None, dropout: float = 0.0, **train):
    settings = {"steps": 4, "checkpoint_every": 2, "eval_every": 2, "keep_checkpoints": 3, **train}
    cfg = pretrain_config(out, **settings)
    cfg.model = cfg.model.model_copy(update={"dropout": dropout})
    if parallel:
        cfg.parallel = cfg.parallel.model_validate(parallel)
    return cfg


def write(cfg, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return path


def lmforge(*args: str, **popen) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "lmforge", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **popen)


def run(*args: str) -> str:
    process = lmforge(*args)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output[-3000:]
    return output


def trajectory(out: Path) -> tuple[dict[int, float], dict[int, float]]:
    records = read_metrics(out / "checkpoints" / "t" / "metrics.jsonl")
    return ({r["step"]: r["loss"] for r in records if "loss" in r},
            {r["step"]: r["val_loss"] for r in records if "val_loss" in r})


def assert_same(got: dict[int, float], expected: dict[int, float], steps) -> None:
    assert sorted(got) == list(steps)
    for step in steps:
        assert got[step] == pytest.approx(expected[step], abs=1e-5), step


@pytest.fixture(scope="module")
def single(pretrain_config, tmp_path_factory):
    """The reference: one process, no parallelism, for both objectives."""
    runs = {}
    for objective in ("causal", "masked"):
        out = tmp_path_factory.mktemp(f"single-{objective}")
        pretrain(make_config(pretrain_config, out, objective=objective), resume=None)
        runs[objective] = out
    return runs


@pytest.fixture(scope="module")
def layout_run(pretrain_config, tmp_path_factory):
    """Run a layout of LAYOUTS once per module (torchrun directly, skipping the CLI's parent)."""
    done: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in done:
            nproc, parallel, train = LAYOUTS[name]
            out = tmp_path_factory.mktemp(name)
            config = write(make_config(pretrain_config, out, parallel, **train), out / "cfg.yaml")
            env = {**os.environ, "OMP_NUM_THREADS": "1"}
            command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                       f"--nproc-per-node={nproc}", "-m", "lmforge.train.launch", str(config),
                       "--resume", "none"]
            result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
            assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
            done[name] = out
        return done[name]

    return get


@pytest.mark.parametrize("name", LAYOUTS)
def test_layout_matches_single_process(name, single, layout_run):
    out = layout_run(name)
    losses, val = trajectory(out)
    train = LAYOUTS[name][2]
    expected_losses, expected_val = trajectory(single[train.get("objective", "causal")])
    assert_same(losses, expected_losses, range(1, 5))
    assert_same(val, expected_val, (0, 2, 4))
    assert (out / "models" / "t" / "model.safetensors").is_file()


@pytest.mark.parametrize(("written_at", "read_at"), [("ddp", "tp"), ("pp-gpipe", None), (None, "fsdp")])
def test_checkpoint_resumes_at_another_layout(written_at, read_at, single, layout_run, pretrain_config,
                                              tmp_path):
    first = single["causal"] if written_at is None else layout_run(written_at)
    checkpoint = first / "checkpoints" / "t" / "step_000002"
    if read_at is None:
        pretrain(make_config(pretrain_config, tmp_path), resume=str(checkpoint))
    else:
        nproc, parallel, _ = LAYOUTS[read_at]
        config = write(make_config(pretrain_config, tmp_path, parallel), tmp_path / "cfg.yaml")
        output = run("pretrain", str(config), "--resume", str(checkpoint), "--nproc", str(nproc))
        assert "launching" in output and f"resumed from {checkpoint}" in output
    losses, val = trajectory(tmp_path)
    expected_losses, expected_val = trajectory(single["causal"])
    assert_same(losses, expected_losses, (3, 4))
    assert_same(val, expected_val, (4,))


def test_dropout_streams_differ_per_rank_and_resume_exactly_at_the_same_layout(pretrain_config, tmp_path):
    def launch(out: Path, resume: str) -> None:
        cfg = make_config(pretrain_config, out, {"dp_replicate": 2, "dp_shard": 1}, dropout=0.1)
        assert cfg.model.dropout > 0
        run("pretrain", str(write(cfg, out / "cfg.yaml")), "--resume", resume, "--nproc", "2")

    launch(tmp_path / "straight", "none")
    checkpoint = tmp_path / "straight" / "checkpoints" / "t" / "step_000002"
    state = json.loads((checkpoint / "state.json").read_text())
    assert state["rng_per_rank"][0]["torch"] != state["rng_per_rank"][1]["torch"]
    launch(tmp_path / "resumed", str(checkpoint))
    assert_same(trajectory(tmp_path / "resumed")[0], trajectory(tmp_path / "straight")[0], (3, 4))


def test_hard_killed_parallel_run_resumes_to_the_single_process_trajectory(pretrain_config, tmp_path):
    # Evaluating every step slows steps enough to kill mid-run.
    slow = {"steps": 20, "checkpoint_every": 5, "eval_every": 1, "eval_segments": 10}
    straight = tmp_path / "straight"
    pretrain(make_config(pretrain_config, straight, **slow), resume=None)

    resumed = tmp_path / "resumed"
    path = write(make_config(pretrain_config, resumed, {"dp_shard": 2}, **slow), resumed / "cfg.yaml")
    process = lmforge("pretrain", str(path), "--nproc", "2", start_new_session=True)
    deadline = time.time() + 300
    while latest_checkpoint(resumed / "checkpoints" / "t") is None and process.poll() is None \
            and time.time() < deadline:
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)  # the launcher and every worker, at once
    process.wait()
    killed_at = int(latest_checkpoint(resumed / "checkpoints" / "t").name.split("_")[1])
    assert killed_at < 20, "the kill came too late to test resuming"
    assert not (resumed / "models" / "t").exists()

    run("pretrain", str(path), "--nproc", "2")
    losses, _ = trajectory(resumed)
    expected, _ = trajectory(straight)
    assert_same(losses, expected, range(1, 21))


def test_layout_that_does_not_fit_fails_before_any_worker_starts(pretrain_config, tmp_path):
    cfg = make_config(pretrain_config, tmp_path, {"tp": 4, "dp_shard": 1})
    process = lmforge("pretrain", str(write(cfg, tmp_path / "cfg.yaml")), "--nproc", "4")
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 1
    assert "tp=4 does not divide n_heads=2" in output
    assert "launching" not in output and not (tmp_path / "checkpoints").exists()
