"""Resumable checkpoints: safetensors for tensors, JSON for everything else, written atomically.

A checkpoint is `step_NNNNNN/` holding
  model.safetensors    the weights,
  trainer.safetensors  AdamW moments and the recurrence memory of every micro-batch,
  state.json           step, data position, RNG states, optimizer scalars, plateau state, config.
The folder is filled under a temporary name and renamed, so a folder with a step name is
complete; nothing is ever unpickled, so loading a checkpoint cannot run code.
"""

from __future__ import annotations

import ast
import base64
import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from lmforge.artifacts import atomic_dir, atomic_write_json

STATE = "state.json"


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from (missing, corrupt, other architecture)."""


@dataclass
class TrainerState:
    """Everything besides weights and optimizer moments needed to continue a run exactly."""

    step: int
    plateau: dict[str, Any]
    model_config: dict[str, Any]
    best_val_loss: float | None = None


def step_dir(root: Path, step: int) -> Path:
    return root / f"step_{step:06d}"


def save_checkpoint(root: Path, state: TrainerState, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, mems: list[list[torch.Tensor]],
                    keep: int) -> Path:
    """Write checkpoint `step_<state.step>` under `root`, then prune to the `keep` newest."""
    target = step_dir(root, state.step)
    tensors, scalars = _flatten_optimizer(optimizer)
    for micro, layers in enumerate(mems):
        for layer, mem in enumerate(layers):
            tensors[f"mem.{micro}.{layer}"] = mem.contiguous()
    with atomic_dir(target, overwrite=True) as tmp:
        save_model(model, str(tmp / "model.safetensors"))
        save_file(tensors, str(tmp / "trainer.safetensors"))
        atomic_write_json(tmp / STATE, {
            "step": state.step,
            "data_position": state.step,
            "plateau": state.plateau,
            "best_val_loss": state.best_val_loss,
            "model_config": state.model_config,
            "optimizer": scalars,
            "rng": _rng_state(),
        })
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoint folders under `root`, oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.glob("step_*") if p.is_dir() and (p / STATE).is_file()]
    return sorted(found, key=lambda p: p.name)


def latest_checkpoint(root: Path) -> Path | None:
    """The newest checkpoint whose state.json parses; a damaged newest one is skipped."""
    for path in reversed(list_checkpoints(root)):
        try:
            json.loads((path / STATE).read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if (path / "model.safetensors").is_file() and (path / "trainer.safetensors").is_file():
            return path
    return None


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    model_config: dict[str, Any]) -> tuple[TrainerState, list[list[torch.Tensor]]]:
    """Restore weights, optimizer, RNG into the given objects; return the trainer state and mems."""
    meta = json.loads((path / STATE).read_text())
    _check_architecture(path, meta["model_config"], model_config)
    load_model(model, str(path / "model.safetensors"))
    tensors = load_file(str(path / "trainer.safetensors"))
    _restore_optimizer(optimizer, tensors, meta["optimizer"])
    _restore_rng(meta["rng"])
    state = TrainerState(step=meta["step"], plateau=meta["plateau"], model_config=meta["model_config"],
                         best_val_loss=meta.get("best_val_loss"))
    return state, _unflatten_mems(tensors)


def _check_architecture(path: Path, saved: dict[str, Any], wanted: dict[str, Any]) -> None:
    ignore = {"dropout", "preset"}
    diff = [k for k in sorted(set(saved) | set(wanted)) if k not in ignore and saved.get(k) != wanted.get(k)]
    if diff:
        detail = ", ".join(f"{k}: checkpoint {saved.get(k)!r} vs config {wanted.get(k)!r}" for k in diff)
        raise CheckpointError(f"{path}: checkpoint is for another architecture ({detail})")


def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    for index, slots in state["state"].items():
        for name, value in slots.items():
            tensors[f"opt.{index}.{name}"] = torch.as_tensor(value).contiguous()
    return tensors, {"param_groups": state["param_groups"]}


def _restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                       scalars: dict) -> None:
    slots: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, index, name = key.split(".", 2)
            slots.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": slots, "param_groups": scalars["param_groups"]})


def _unflatten_mems(tensors: dict[str, torch.Tensor]) -> list[list[torch.Tensor]]:
    keys = sorted((tuple(map(int, k.split(".")[1:])), k) for k in tensors if k.startswith("mem."))
    mems: list[list[torch.Tensor]] = []
    for (micro, _layer), key in keys:
        while len(mems) <= micro:
            mems.append([])
        mems[micro].append(tensors[key])
    return mems


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode(),
        "python": repr(random.getstate()),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }


def _restore_rng(state: dict[str, Any]) -> None:
    torch_state = np.frombuffer(base64.b64decode(state["torch"]), dtype=np.uint8).copy()
    torch.set_rng_state(torch.from_numpy(torch_state))
    random.setstate(ast.literal_eval(state["python"]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
