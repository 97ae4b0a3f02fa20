from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from lmforge.errors import LmforgeError
from lmforge.model.folder import load_model
from lmforge.train import CheckpointError, TrainingDiverged, pretrain
from lmforge.train.checkpoint import latest_checkpoint
from lmforge.train.engine import Engine
from lmforge.train.metrics import read_metrics


def test_pretrain_learns_and_writes_a_model_folder(pretrain_config, tmp_path):
    result = pretrain(pretrain_config(tmp_path, steps=30, eval_every=10), resume=None)
    assert result.val_loss_after < result.val_loss_before
    assert sorted(p.name for p in result.model_dir.iterdir()) == [
        "config.json", "heads.json", "manifest.json", "model.safetensors", "tokenizer.json"]
    model = load_model(result.model_dir)
    assert model.config.d_model == 32
    records = read_metrics(result.checkpoint_dir / "metrics.jsonl")
    assert {"loss", "lr", "tokens_per_s", "mfu", "grad_norm"} <= set(records[1])
    assert any("val_ppl" in r for r in records)
    assert (result.checkpoint_dir / "tensorboard").is_dir()
    state = json.loads((latest_checkpoint(result.checkpoint_dir) / "state.json").read_text())
    assert state["step"] == 30 and state["data_position"] == 30
    assert {"torch", "python", "numpy"} <= set(state["rng"])
    assert "param_groups" in state["optimizer"] and "patience" in state["plateau"]


def test_bf16_autocast_trains(pretrain_config, tmp_path):
    result = pretrain(pretrain_config(tmp_path, steps=10, precision="bf16"), resume=None)
    assert result.val_loss_after < result.val_loss_before


def test_masked_objective_trains(pretrain_config, tmp_path):
    result = pretrain(pretrain_config(tmp_path, steps=20, objective="masked"), resume=None)
    assert result.val_loss_after < result.val_loss_before
    assert json.loads((result.model_dir / "heads.json").read_text())["heads"]["lm"]["task"] == "masked_lm"


def poison_step(monkeypatch, bad_step: int) -> None:
    """Make the loss of call `bad_step` (0-based) of Engine.forward_backward NaN."""
    real = Engine.forward_backward
    steps = iter(range(1000))

    def poisoned(self, *args, **kwargs):
        loss, mems, penalty = real(self, *args, **kwargs)
        return (float("nan") if next(steps) == bad_step else loss), mems, penalty

    monkeypatch.setattr(Engine, "forward_backward", poisoned)


def test_a_nan_before_any_checkpoint_says_none_was_kept(pretrain_config, tmp_path, monkeypatch):
    poison_step(monkeypatch, 3)
    cfg = pretrain_config(tmp_path, steps=20, checkpoint_every=10)
    with pytest.raises(TrainingDiverged, match=r"step 3: loss is nan .*no checkpoint had been written yet"):
        pretrain(cfg, resume=None)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(pretrain_config, tmp_path, monkeypatch):
    poison_step(monkeypatch, 13)
    cfg = pretrain_config(tmp_path, steps=20, checkpoint_every=10)
    with pytest.raises(TrainingDiverged, match=r"step 13: loss is nan.*step_000010"):
        pretrain(cfg, resume=None)
    last = latest_checkpoint(tmp_path / "checkpoints" / "t")
    assert last.name == "step_000010"
    assert all(v.isfinite().all() for v in load_file(str(last / "model.safetensors")).values())
    assert not (tmp_path / "models" / "t").exists()


def test_resuming_another_architecture_is_refused(pretrain_config, tmp_path):
    pretrain(pretrain_config(tmp_path, steps=10), resume=None)
    other = pretrain_config(tmp_path, steps=20)
    other.model = other.model.model_copy(update={"d_model": 64, "d_ff": 128})
    with pytest.raises(CheckpointError, match=r"another architecture \(d_ff: checkpoint 64 vs config 128"):
        pretrain(other, resume="auto")
    with pytest.raises(CheckpointError, match="not a checkpoint folder"):
        pretrain(other, resume=str(tmp_path))


def test_compile_is_refused_where_the_compiler_gives_nan(pretrain_config, tmp_path):
    cfg = pretrain_config(tmp_path, steps=2, compile=True, precision="bf16", device="cpu")
    with pytest.raises(LmforgeError, match="use precision=fp32 or compile=false"):
        pretrain(cfg, resume=None)
