"""Every parallel layout trains exactly like one process: real torchrun workers over gloo.

Each layout of LAYOUTS (up to 3-D: FSDP2 x TP x PP over 8 processes) trains a tiny model
(d_model 32, 2 layers, or 4 for the 4-stage pipeline) for 8 steps on the same global batch of 4
sequences as a single-process run with the same settings, and must match it step by step:

- the gradient norm before clipping (a gradient scale or norm error shows here even where AdamW
  would hide it, since AdamW is nearly invariant to a constant gradient scale);
- the step losses, and the validation losses at steps 0, 4 and 8;
- the final weights (models/t/model.safetensors), tensor by tensor.

Half of the layouts run with `grad_clip` 0, half with a threshold inside the range of the
reference's gradient norms, so the clip fires on some steps and not on others (checked by
`test_clipping_fires_on_some_steps_only`): a wrong norm then changes which steps are clipped and
by how much, and the weights show it.

Tolerances (FP32_TOLERANCE, BF16_TOLERANCE), each about 5-10x the largest difference observed over
all layouts, which is float32 (or bf16) reduction-order noise: float32 step and validation losses
5e-6 absolute (observed 7e-7, 1-2 ulp of a loss of 6.9), gradient norms 3e-5 relative (observed
2.5e-6), weights 1e-4 absolute per element (observed 1.8e-5; weights have an RMS of 0.01-0.02 and
making 2 of the 8 steps clipped moves them by up to 3e-3). The weights are the loosest because
AdamW divides each gradient by its own running RMS: where a gradient is mathematically zero or
nearly so (the key bias, and the W_r columns of the slow sinusoids, to which softmax is
shift-invariant), the float32 rounding noise itself becomes the update. bf16 (autocast; weights
and AdamW in float32) against the single-process bf16 run: losses 3e-3 (observed 4.4e-4),
gradient norms 2e-2 relative (observed 2.5e-3), weights 5e-2 (observed 1.8e-2: the same AdamW
effect on bf16 rounding, so in bf16 the weights are a coarse check and the trajectory is the
fine one; observed over the tp and pp-gpipe bf16 layouts, pp-gpipe-bf16 is the one kept).

Dropout is 0 in all of these. With dropout on, a parallel run cannot equal one process by
design: every data-parallel slice and pipeline stage draws its dropout masks from its own RNG
stream (tensor-parallel ranks share their slice's stream). What dropout-on runs must do instead,
each rank having its own stream and a resume at the same layout continuing exactly, is tested by
`test_dropout_streams_differ_per_rank_and_resume_exactly_at_the_same_layout`. Checkpoints written
at one layout must resume at another to the same trajectory and weights. A run whose launcher
is hard-killed mid-way (kill -9 of its process group) takes its workers with it and resumes to
the single-process trajectory.

Every torchrun or CLI process a test starts runs in its own session and, on a timeout or an
error, is killed with its whole process tree (`kill_tree`): torchrun starts each worker in a
session of its own, so killing torchrun's process group alone would orphan the workers. gloo is
pinned to the loopback interface (tests/dist/conftest.py; `lmforge pretrain --nproc` does the
same by itself, checked by `test_local_launch_binds_gloo_to_loopback_unless_told_otherwise`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from processes import alive, communicate_bounded, kill_tree, process_tree, start_in_session
from safetensors.torch import load_file

from lmforge.train import pretrain
from lmforge.train.checkpoint import latest_checkpoint
from lmforge.train.metrics import read_metrics

pytestmark = pytest.mark.slow

STEPS, EVERY = 8, 4  # steps per run; evaluation and checkpoint interval
CLIP = {"causal": 1.5, "masked": 3.0}
"""Thresholds inside the reference runs' gradient-norm ranges (causal ~1-2, masked ~1.8-7)."""
FP32_TOLERANCE = {"loss": 5e-6, "grad_norm": 3e-5, "weights": 1e-4}
"""Absolute for losses and weights (per element), relative for gradient norms (see the docstring)."""
BF16_TOLERANCE = {"loss": 3e-3, "grad_norm": 2e-2, "weights": 5e-2}
"""The same against the single-process bf16 run: bf16 matmuls of other shapes round differently."""
PROCESS_TIMEOUT = 300

# name: (processes, parallel settings, train settings, model settings)
LAYOUTS = {
    "ddp": (2, {"dp_replicate": 2, "dp_shard": 1}, {}, {}),
    "ddp-accumulating": (2, {"dp_replicate": 2, "dp_shard": 1},
                         {"micro_batch_size": 1, "grad_clip": CLIP["causal"]}, {}),
    "ddp-masked-lm-accumulating": (2, {"dp_replicate": 2, "dp_shard": 1},
                                   {"objective": "masked", "micro_batch_size": 1}, {}),
    "fsdp": (2, {"dp_shard": 2}, {"grad_clip": CLIP["causal"]}, {}),
    "fsdp-accumulating": (2, {"dp_shard": 2}, {"micro_batch_size": 1}, {}),
    "fsdp-masked-lm": (2, {"dp_shard": 2}, {"objective": "masked", "grad_clip": CLIP["masked"]}, {}),
    "hsdp": (4, {"dp_replicate": 2, "dp_shard": 2}, {"grad_clip": CLIP["causal"]}, {}),
    "tp": (2, {"tp": 2, "dp_shard": 1}, {}, {}),
    "tp-masked-lm": (2, {"tp": 2, "dp_shard": 1}, {"objective": "masked", "grad_clip": CLIP["masked"]}, {}),
    "pp-gpipe": (2, {"pp": 2, "dp_shard": 1, "pp_schedule": "gpipe"}, {"grad_clip": CLIP["causal"]}, {}),
    "pp-1f1b-masked-lm": (2, {"pp": 2, "dp_shard": 1, "pp_schedule": "1f1b", "microbatches": 4},
                          {"objective": "masked"}, {}),
    "pp-4-stages": (4, {"pp": 4, "dp_shard": 1}, {"grad_clip": CLIP["causal"]}, {"n_layers": 4}),
    "fsdp-x-tp": (4, {"dp_shard": 2, "tp": 2}, {}, {}),
    "ddp-x-pp": (4, {"dp_replicate": 2, "dp_shard": 1, "pp": 2}, {"grad_clip": CLIP["causal"]}, {}),
    "tp-x-pp": (4, {"tp": 2, "pp": 2, "dp_shard": 1}, {}, {}),
    "fsdp-x-tp-x-pp": (8, {"dp_shard": 2, "tp": 2, "pp": 2}, {"grad_clip": CLIP["causal"]}, {}),
    "pp-gpipe-bf16": (2, {"pp": 2, "dp_shard": 1, "pp_schedule": "gpipe"},
                      {"precision": "bf16", "grad_clip": CLIP["causal"]}, {}),
}


# --- processes: own session, whole tree killed on timeout or error ---------------------------------

def start(command: list[str]) -> subprocess.Popen:
    return start_in_session(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(process: subprocess.Popen, timeout: float = PROCESS_TIMEOUT) -> str:
    """Wait for `process`; on a timeout (or the test being interrupted) its whole tree is killed."""
    try:
        output, _ = communicate_bounded(process, timeout)
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"{' '.join(process.args[:6])}... ran past {timeout}s; its process tree was killed\n"
                    f"{error.output[-3000:]}")
    return output


def lmforge(*args: str) -> subprocess.Popen:
    return start([sys.executable, "-m", "lmforge", *args])


def run(*args: str) -> str:
    process = lmforge(*args)
    output = finish(process)
    assert process.returncode == 0, output[-3000:]
    return output


# --- configs and what a run leaves behind ------------------------------------------------------------

def make_config(pretrain_config, out: Path, parallel: dict | None = None, model: dict | None = None,
                dropout: float = 0.0, **train):
    settings = {"steps": STEPS, "checkpoint_every": EVERY, "eval_every": EVERY, "keep_checkpoints": 2,
                "grad_clip": 0.0, **train}
    cfg = pretrain_config(out, **settings)
    cfg.model = cfg.model.model_copy(update={"dropout": dropout, **(model or {})})
    if parallel:
        cfg.parallel = cfg.parallel.model_validate(parallel)
    return cfg


def write(cfg, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return path


def records(out: Path, key: str) -> dict[int, float]:
    return {r["step"]: r[key] for r in read_metrics(out / "checkpoints" / "t" / "metrics.jsonl") if key in r}


def trajectory(out: Path) -> tuple[dict[int, float], dict[int, float]]:
    return records(out, "loss"), records(out, "val_loss")


def weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "models" / "t" / "model.safetensors"))


def assert_same(got: dict[int, float], expected: dict[int, float], steps, abs: float = 1e-5,
                rel: float | None = None, what: str = "loss") -> None:
    assert sorted(got) == list(steps), what
    for step in steps:
        assert got[step] == pytest.approx(expected[step], abs=abs, rel=rel), f"{what} at step {step}"


def assert_same_weights(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], atol: float) -> None:
    assert sorted(got) == sorted(expected)
    worst = {name: float((got[name] - expected[name]).abs().max()) for name in expected}
    off = {name: diff for name, diff in worst.items() if not diff <= atol}
    assert not off, f"weights differ by more than {atol}: {off}"


def assert_run_matches(out: Path, reference: Path, tolerance: dict[str, float], steps=range(1, STEPS + 1),
                       val_steps=(0, EVERY, STEPS)) -> None:
    """Losses, pre-clip gradient norms, validation losses and final weights of `out` equal `reference`'s."""
    assert_same(records(out, "grad_norm"), records(reference, "grad_norm"), steps, abs=0.0,
                rel=tolerance["grad_norm"], what="grad_norm")
    assert_same(records(out, "loss"), records(reference, "loss"), steps, abs=tolerance["loss"])
    assert_same(records(out, "val_loss"), records(reference, "val_loss"), val_steps, abs=tolerance["loss"],
                what="val_loss")
    assert_same_weights(weights(out), weights(reference), tolerance["weights"])


def reference_settings(train: dict) -> dict:
    """What the single-process reference shares with a layout's train settings (not accumulation:
    the reference runs each batch whole)."""
    return {k: v for k, v in train.items() if k != "micro_batch_size"}


# --- fixtures: each run once per module, on first use -------------------------------------------------

@pytest.fixture(scope="module")
def single(pretrain_config, tmp_path_factory):
    """single(train, model): the single-process run with those settings (run once, on first use)."""
    done: dict[str, Path] = {}

    def get(train: dict | None = None, model: dict | None = None) -> Path:
        train, model = reference_settings(train or {}), model or {}
        key = json.dumps([train, model], sort_keys=True)
        if key not in done:
            out = tmp_path_factory.mktemp("single")
            pretrain(make_config(pretrain_config, out, model=model, **train), resume=None)
            (out / "key.json").write_text(key)
            done[key] = out
        return done[key]

    return get


@pytest.fixture(scope="module")
def layout_run(pretrain_config, tmp_path_factory):
    """Run a layout of LAYOUTS once per module (torchrun directly, skipping the CLI's parent)."""
    done: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in done:
            nproc, parallel, train, model = LAYOUTS[name]
            out = tmp_path_factory.mktemp(name)
            config = write(make_config(pretrain_config, out, parallel, model, **train), out / "cfg.yaml")
            process = start([sys.executable, "-m", "torch.distributed.run", "--standalone",
                             f"--nproc-per-node={nproc}", "-m", "lmforge.train.launch", "pretrain",
                             str(config), "--resume", "none"])
            output = finish(process)
            assert process.returncode == 0, output[-3000:]
            done[name] = out
        return done[name]

    return get


# --- tests ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", LAYOUTS)
def test_layout_matches_single_process(name, single, layout_run):
    _, _, train, model = LAYOUTS[name]
    tolerance = BF16_TOLERANCE if train.get("precision") == "bf16" else FP32_TOLERANCE
    assert_run_matches(layout_run(name), single(train, model), tolerance)


@pytest.mark.parametrize("objective", CLIP)
def test_clipping_fires_on_some_steps_only(objective, single):
    """The clipped layouts' premise: their reference is clipped on some steps and not on others."""
    clipped = single({"objective": objective, "grad_clip": CLIP[objective]})
    norms = list(records(clipped, "grad_norm").values())
    assert any(n > CLIP[objective] for n in norms) and any(n < CLIP[objective] for n in norms), norms
    unclipped, clipped = weights(single({"objective": objective})), weights(clipped)
    assert max(float((unclipped[name] - clipped[name]).abs().max()) for name in unclipped) \
        > 10 * FP32_TOLERANCE["weights"]


@pytest.mark.parametrize(("written_at", "read_at"), [("ddp", "tp"), ("pp-gpipe", None), (None, "fsdp")])
def test_checkpoint_resumes_at_another_layout(written_at, read_at, single, layout_run, pretrain_config,
                                              tmp_path):
    train = reference_settings(LAYOUTS[written_at][2]) if written_at else {}
    first = single(train) if written_at is None else layout_run(written_at)
    checkpoint = first / "checkpoints" / "t" / f"step_{EVERY:06d}"
    if read_at is None:
        pretrain(make_config(pretrain_config, tmp_path, **train), resume=str(checkpoint))
    else:
        nproc, parallel, _, _ = LAYOUTS[read_at]
        config = write(make_config(pretrain_config, tmp_path, parallel, **train), tmp_path / "cfg.yaml")
        output = run("pretrain", str(config), "--resume", str(checkpoint), "--nproc", str(nproc))
        assert "launching" in output and f"resumed from {checkpoint}" in output
    assert_run_matches(tmp_path, single(train), FP32_TOLERANCE, steps=range(EVERY + 1, STEPS + 1),
                       val_steps=(STEPS,))


def test_dropout_streams_differ_per_rank_and_resume_exactly_at_the_same_layout(pretrain_config, tmp_path):
    def launch(out: Path, resume: str) -> None:
        cfg = make_config(pretrain_config, out, {"dp_replicate": 2, "dp_shard": 1}, dropout=0.1,
                          steps=4, checkpoint_every=2, eval_every=2, keep_checkpoints=3, grad_clip=1.0)
        assert cfg.model.dropout > 0
        run("pretrain", str(write(cfg, out / "cfg.yaml")), "--resume", resume, "--nproc", "2")

    launch(tmp_path / "straight", "none")
    checkpoint = tmp_path / "straight" / "checkpoints" / "t" / "step_000002"
    state = json.loads((checkpoint / "state.json").read_text())
    assert state["rng_per_rank"][0]["torch"] != state["rng_per_rank"][1]["torch"]
    launch(tmp_path / "resumed", str(checkpoint))
    assert_same(trajectory(tmp_path / "resumed")[0], trajectory(tmp_path / "straight")[0], (3, 4), abs=0.0)


def test_hard_killed_parallel_run_resumes_to_the_single_process_trajectory(pretrain_config, tmp_path):
    # Evaluating every step slows steps enough to kill mid-run.
    slow = {"steps": 20, "checkpoint_every": 5, "eval_every": 1, "eval_segments": 10, "grad_clip": 1.0}
    straight = tmp_path / "straight"
    pretrain(make_config(pretrain_config, straight, **slow), resume=None)

    resumed = tmp_path / "resumed"
    path = write(make_config(pretrain_config, resumed, {"dp_shard": 2}, **slow), resumed / "cfg.yaml")
    process = lmforge("pretrain", str(path), "--nproc", "2")
    tree: list[int] = []
    try:
        deadline = time.time() + PROCESS_TIMEOUT
        while latest_checkpoint(resumed / "checkpoints" / "t") is None and process.poll() is None \
                and time.time() < deadline:
            time.sleep(0.01)
        tree = process_tree(process.pid)  # the launcher, torchrun and the workers
        # kill -9 the launcher's process group: the launcher and torchrun, but not the workers,
        # which torchrun starts in sessions of their own; they must notice and die by themselves.
        os.killpg(process.pid, signal.SIGKILL)
        with suppress(subprocess.TimeoutExpired):  # EOF once the workers (they share the pipe) are gone
            process.communicate(timeout=3)
        survivors = [pid for pid in tree if alive(pid)]
    finally:  # whatever happened, leave nothing running
        for pid in tree:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        kill_tree(process)
        process.communicate()
    assert len(tree) >= 4, f"expected the launcher, torchrun and 2 workers, found {tree}"
    assert not survivors, f"workers {survivors} outlived their launcher by 3 s"
    killed_at = int(latest_checkpoint(resumed / "checkpoints" / "t").name.split("_")[1])
    finished = "the kill came too late to test resuming, or the workers finished without their launcher"
    assert killed_at < 20, finished
    assert not (resumed / "models" / "t").exists(), finished

    run("pretrain", str(path), "--nproc", "2")
    losses, _ = trajectory(resumed)
    expected, _ = trajectory(straight)
    assert_same(losses, expected, range(1, 21))


def test_layout_that_does_not_fit_fails_before_any_worker_starts(pretrain_config, tmp_path):
    cfg = make_config(pretrain_config, tmp_path, {"tp": 4, "dp_shard": 1})
    process = lmforge("pretrain", str(write(cfg, tmp_path / "cfg.yaml")), "--nproc", "4")
    output = finish(process, timeout=120)
    assert process.returncode == 1
    assert "tp=4 does not divide n_heads=2" in output
    assert "launching" not in output and not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize("preset", [None, "eth7"])
def test_local_launch_binds_gloo_to_loopback_unless_told_otherwise(preset, pretrain_config, tmp_path,
                                                                    loopback_env, monkeypatch):
    from lmforge.train import launch as launcher

    started = []
    fake = SimpleNamespace(run=lambda command, **kw: started.append(kw.get("env")) or
                           subprocess.CompletedProcess(command, 0))
    monkeypatch.setattr(launcher, "subprocess", fake)
    if preset is None:
        monkeypatch.delenv("GLOO_SOCKET_IFNAME", raising=False)
    else:
        monkeypatch.setenv("GLOO_SOCKET_IFNAME", preset)
    cfg = make_config(pretrain_config, tmp_path, {"dp_shard": 2})
    assert launcher.launch("pretrain", cfg, 2, "none") == 0
    assert started[0]["GLOO_SOCKET_IFNAME"] == (preset or loopback_env["GLOO_SOCKET_IFNAME"])
