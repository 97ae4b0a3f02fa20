"""Exact resume: 20 uninterrupted steps == 10 steps, a hard kill, and a resumed run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from lmforge.train.checkpoint import latest_checkpoint
from lmforge.train.metrics import read_metrics

pytestmark = pytest.mark.slow


def launch(config_path: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "lmforge", "pretrain", str(config_path)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def write_config(make_config, out: Path) -> Path:
    # Evaluating the whole validation split every step slows each step enough to kill mid-run.
    cfg = make_config(out, steps=20, checkpoint_every=5, eval_every=1, eval_segments=0)
    path = out / "pretrain.yaml"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return path


def losses(out: Path) -> dict[int, float]:
    records = read_metrics(out / "checkpoints" / "t" / "metrics.jsonl")
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def test_killed_and_resumed_run_matches_uninterrupted(pretrain_config, tmp_path):
    straight = tmp_path / "straight"
    assert launch(write_config(pretrain_config, straight)).wait(timeout=300) == 0

    resumed = tmp_path / "resumed"
    config = write_config(pretrain_config, resumed)
    ckpts = resumed / "checkpoints" / "t"
    process = launch(config)
    deadline = time.time() + 300
    while latest_checkpoint(ckpts) is None and process.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = int(latest_checkpoint(ckpts).name.split("_")[1])
    assert killed_at < 20, "the kill came too late to test resuming"
    assert not (resumed / "models" / "t").exists()

    assert launch(config).wait(timeout=300) == 0
    expected, got = losses(straight), losses(resumed)
    assert sorted(got) == list(range(1, 21))
    for step in range(1, 21):
        assert got[step] == pytest.approx(expected[step], abs=1e-6), step
