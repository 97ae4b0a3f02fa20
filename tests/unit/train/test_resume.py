"""Exact resume: an interrupted run, resumed, continues the uninterrupted trajectory bit for bit.

Every run here has the shipped default dropout (0.1) on and measures the MFU probe itself (no
`peak_gflops`), as a user's run does: both once broke resume (the probe drew from the restored
global RNG and shifted every later dropout mask). Each configuration runs once straight through;
a copy of its checkpoints cut back to a later checkpoint than the first is resumed, and must give
the same losses, gradient norms, learning rates and validation losses, and bit-identical final
weights. The subprocess tests kill a run for real: with `kill -9` at an arbitrary moment, and
with SIGKILL from inside a checkpoint write.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml
from processes import communicate_bounded, start_in_session
from safetensors.torch import load_file, save_file

from lmforge.train import pretrain
from lmforge.train.checkpoint import CheckpointError, latest_checkpoint, list_checkpoints
from lmforge.train.metrics import read_metrics

pytestmark = pytest.mark.slow

CONFIGS = {
    "causal": {},
    "masked-accumulating-bf16": {"objective": "masked", "micro_batch_size": 2, "precision": "bf16"},
    # lr 0.05 overshoots, so validation stops improving and the x0.1 plateau cut fires early.
    "causal-accumulating-plateau": {"micro_batch_size": 1, "eval_every": 1, "plateau_patience": 1,
                                    "lr": 0.05},
}
LOGGED = ("loss", "grad_norm", "lr", "val_loss", "lr_scale")


def records(out: Path) -> dict[tuple[int, str], float]:
    found = {}
    for record in read_metrics(out / "checkpoints" / "t" / "metrics.jsonl"):
        found.update({(record["step"], key): record[key] for key in LOGGED if key in record})
    return found


def final_weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "models" / "t" / "model.safetensors"))


def assert_same_run(got: Path, expected: Path) -> None:
    want, have = records(expected), records(got)
    assert sorted(have) == sorted(want)
    mismatched = {k: (have[k], want[k]) for k in want if have[k] != want[k]}
    assert not mismatched, f"resumed run differs at {sorted(mismatched)[:5]}"
    a, b = final_weights(got), final_weights(expected)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "final weights differ"
    # The last checkpoint: step, plateau, best loss, config, optimizer scalars, RNG streams, and
    # AdamW moments and recurrence memory, all as the uninterrupted run left them.
    mine = latest_checkpoint(got / "checkpoints" / "t")
    theirs = latest_checkpoint(expected / "checkpoints" / "t")
    assert mine.name == theirs.name
    assert json.loads((mine / "state.json").read_text()) == json.loads((theirs / "state.json").read_text())
    a, b = load_file(str(mine / "trainer.safetensors")), load_file(str(theirs / "trainer.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "optimizer moments or memory differ"


def cut_back(straight: Path, to: Path, keep_step: int) -> Path:
    """A copy of a finished run as a run interrupted just after checkpoint `keep_step`."""
    shutil.copytree(straight, to)
    shutil.rmtree(to / "models")
    for path in list_checkpoints(to / "checkpoints" / "t"):
        if int(path.name.split("_")[1]) > keep_step:
            shutil.rmtree(path)
    return to


@pytest.fixture(scope="module")
def straight_runs(pretrain_config, tmp_path_factory):
    """`get(name)` -> (config factory, finished run folder) of configuration `name`, run once."""
    done: dict[str, tuple] = {}

    def get(name: str):
        if name not in done:
            settings = {"steps": 15, "checkpoint_every": 5, "keep_checkpoints": 3, "eval_every": 5,
                        "peak_gflops": None, **CONFIGS[name]}

            def config(out: Path):
                cfg = pretrain_config(out, **settings)
                assert cfg.model.dropout > 0  # the presets' default
                return cfg

            out = tmp_path_factory.mktemp(f"straight-{name}")
            pretrain(config(out), resume=None)
            done[name] = config, out
        return done[name]

    return get


@pytest.mark.parametrize("name", list(CONFIGS))
def test_resumed_from_a_later_checkpoint_equals_the_uninterrupted_run(name, straight_runs, tmp_path):
    config, straight = straight_runs(name)
    resumed = cut_back(straight, tmp_path / "resumed", keep_step=10)
    if name.endswith("plateau"):
        fired = [step for (step, key), value in records(straight).items() if key == "lr_scale" and value < 1]
        assert fired and min(fired) <= 10, "the plateau must fire before the checkpoint resumed from"
    pretrain(config(resumed), resume="auto")
    assert_same_run(resumed, straight)


@pytest.mark.parametrize("damaged", ["state.json", "model.safetensors", "trainer.safetensors",
                                     "callbacks.safetensors", "no trainer.safetensors",
                                     "no model.safetensors", "no callbacks.safetensors"])
def test_a_damaged_newest_checkpoint_is_skipped(damaged, straight_runs, tmp_path):
    config, straight = straight_runs("causal")
    resumed = cut_back(straight, tmp_path / "resumed", keep_step=10)
    root = resumed / "checkpoints" / "t"
    file = root / "step_000010" / damaged.removeprefix("no ")
    if damaged.startswith("no "):
        file.unlink()
    else:
        file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    assert latest_checkpoint(root) == root / "step_000005"
    pretrain(config(resumed), resume="auto")
    assert_same_run(resumed, straight)


# --- real kills, in subprocesses ---------------------------------------------------------------

KILL_SETTINGS = {"steps": 20, "checkpoint_every": 5, "eval_every": 1, "eval_segments": 20,
                 "objective": "masked", "micro_batch_size": 2, "peak_gflops": None}
"""Evaluating 20 validation batches every step slows each step enough to kill mid-run."""

DIE_IN_CHECKPOINT_WRITE = textwrap.dedent("""
    import os, signal, sys
    import lmforge.train.checkpoint as checkpoint
    from lmforge.cli import main

    real_save = checkpoint.save_file

    def save_then_die(tensors, filename, *args, **kwargs):
        real_save(tensors, filename, *args, **kwargs)
        if ".step_000010.tmp" in filename:  # the model file is written, the rest is not
            os.kill(os.getpid(), signal.SIGKILL)

    checkpoint.save_file = save_then_die
    sys.argv = ["lmforge", "pretrain", sys.argv[1]]
    main()
""")


def start(*args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return start_in_session([sys.executable, *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen, timeout: float = 300) -> int:
    """Wait (the whole tree is killed on a timeout); fail unless the process exited 0 or was killed."""
    try:
        _, stderr = communicate_bounded(process, timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{process.args} did not finish within {timeout}s")
    if process.returncode not in (0, -signal.SIGKILL):
        pytest.fail(f"{process.args} exited {process.returncode}: {stderr[-2000:]}")
    return process.returncode


def write_config(pretrain_config, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "pretrain.yaml"
    path.write_text(yaml.safe_dump(pretrain_config(out, **KILL_SETTINGS).model_dump(mode="json")))
    return path


@pytest.fixture(scope="module")
def straight_subprocess_run(pretrain_config, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("straight-cli")
    assert finish(start("-m", "lmforge", "pretrain", str(write_config(pretrain_config, out)))) == 0
    return out


def test_kill_9_at_any_moment_then_resume_auto(straight_subprocess_run, pretrain_config, tmp_path):
    config = write_config(pretrain_config, tmp_path)
    checkpoints = tmp_path / "checkpoints" / "t"
    process = start("-m", "lmforge", "pretrain", str(config))
    deadline = time.time() + 300
    while latest_checkpoint(checkpoints) is None and process.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    os.killpg(process.pid, signal.SIGKILL)
    finish(process)
    assert latest_checkpoint(checkpoints) is not None, "the run ended before its first checkpoint"
    assert int(latest_checkpoint(checkpoints).name.split("_")[1]) < 20, "the kill came too late"
    assert not (tmp_path / "models" / "t").exists()

    assert finish(start("-m", "lmforge", "pretrain", str(config), "--resume", "auto")) == 0
    assert_same_run(tmp_path, straight_subprocess_run)


def test_killed_inside_a_checkpoint_write_resumes_from_the_previous_one(straight_subprocess_run,
                                                                        pretrain_config, tmp_path):
    config = write_config(pretrain_config, tmp_path)
    checkpoints = tmp_path / "checkpoints" / "t"
    assert finish(start("-c", DIE_IN_CHECKPOINT_WRITE, str(config))) == -signal.SIGKILL
    assert any((checkpoints / ".step_000010.tmp").glob("model*.safetensors")), "not killed mid-write"
    assert latest_checkpoint(checkpoints) == checkpoints / "step_000005"

    assert finish(start("-m", "lmforge", "pretrain", str(config), "--resume", "auto")) == 0
    assert_same_run(tmp_path, straight_subprocess_run)
    assert not (checkpoints / ".step_000010.tmp").exists()


def test_resuming_at_another_batch_size_names_the_checkpoint_and_the_fix(straight_runs, tmp_path):
    config, straight = straight_runs("causal")
    resumed = cut_back(straight, tmp_path / "resumed", keep_step=10)
    cfg = config(resumed)
    cfg.train = cfg.train.model_copy(update={"batch_size": 2})
    checkpoint = resumed / "checkpoints" / "t" / "step_000010"
    with pytest.raises(CheckpointError) as error:
        pretrain(cfg, resume="auto")
    assert str(error.value) == (f"{checkpoint}: memory of layer 0 is missing or was written for another "
                                "batch size; resume with the batch size the checkpoint was written at")


def test_a_checkpoint_missing_a_tensor_names_it(straight_runs, tmp_path):
    config, straight = straight_runs("causal")
    resumed = cut_back(straight, tmp_path / "resumed", keep_step=10)
    checkpoint = resumed / "checkpoints" / "t" / "step_000010"
    weights = load_file(str(checkpoint / "model.safetensors"))
    names = sorted(weights)[:6]
    save_file({k: v for k, v in weights.items() if k not in names}, str(checkpoint / "model.safetensors"))
    with pytest.raises(CheckpointError) as error:
        pretrain(config(resumed), resume=str(checkpoint))
    assert str(error.value).startswith(f"{checkpoint}: no weights for ")
    assert str(error.value).endswith(" (incomplete checkpoint)")
    listed = str(error.value).removeprefix(f"{checkpoint}: no weights for ")
    listed = listed.removesuffix(" (incomplete checkpoint)").split(", ")
    assert len(listed) == 5 and set(listed) < set(names)  # the first five missing, by name


def test_only_the_newest_checkpoints_are_kept_and_nothing_half_written_remains(pretrain_config, tmp_path):
    pretrain(pretrain_config(tmp_path, steps=6, checkpoint_every=2, keep_checkpoints=2), resume=None)
    root = tmp_path / "checkpoints" / "t"
    assert sorted(p.name for p in root.iterdir() if "step" in p.name) == ["step_000004", "step_000006"]


def test_dropout_and_preset_name_may_change_on_resume_but_nothing_architectural(straight_runs, tmp_path):
    config, straight = straight_runs("causal")
    resumed = cut_back(straight, tmp_path / "resumed", keep_step=10)
    state_file = resumed / "checkpoints" / "t" / "step_000010" / "state.json"
    state = json.loads(state_file.read_text())
    original = dict(state["model_config"])

    state["model_config"] = {**original, "d_ff": 1, "n_heads": 1, "added_later": True}
    state_file.write_text(json.dumps(state))
    with pytest.raises(CheckpointError) as error:
        pretrain(config(resumed), resume="auto")
    assert str(error.value).endswith(
        "checkpoint is for another architecture (added_later: checkpoint True vs config None, "
        "d_ff: checkpoint 1 vs config 64, n_heads: checkpoint 1 vs config 2)")

    state["model_config"] = {**original, "dropout": 0.3, "preset": "another-name"}
    state_file.write_text(json.dumps(state))
    cfg = config(resumed)
    cfg.model = cfg.model.model_copy(update={"dropout": 0.2})
    assert pretrain(cfg, resume="auto").steps == 15
