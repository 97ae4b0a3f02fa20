"""Resumable checkpoints that any parallel layout can write and any other can read.

A checkpoint is `step_NNNNNN/` holding
  model.safetensors    whole (unsharded) weights by parameter name,
  trainer.safetensors  AdamW moments by parameter name (`opt.<name>.<slot>`) and the recurrence
                       memory of each layer over the whole batch (`mem.<layer>`, rows in batch order),
  state.json           step, data position, every rank's RNG states, optimizer scalars, plateau
                       state, the step callbacks' state, config, and the layout that wrote it,
  callbacks.safetensors  the tensors of the step callbacks' state (a teacher's memory).
Under pipeline parallel each stage writes its own pair, `model-stage<k>-of-<p>.safetensors`; a
reader merges all of them. Tensors are stored unsharded and named as in the single-device
model, so a run written at dp=2 resumes at tp=2, pp=2 or in one process: torch's full-state-dict
API (`torch.distributed.checkpoint.state_dict`) gathers shards when saving and re-shards when
loading. This costs a gather of the whole model per stage, fine at the sizes this machine
trains, and keeps checkpoints pickle-free (DCP's metadata file is a pickle). The folder is filled
under a temporary name and renamed by rank 0 once every writer is done, so a folder with a step
name is complete.
"""

from __future__ import annotations

import ast
import base64
import json
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from lmforge.artifacts import atomic_write_json
from lmforge.errors import LmforgeError

if TYPE_CHECKING:
    from lmforge.parallel import Layout
    from lmforge.train.engine import Engine, Mems

STATE = "state.json"
CALLBACKS = "callbacks.safetensors"
FULL = StateDictOptions(full_state_dict=True)
HEAD, EMBEDDING = "lm_head.weight", "tok_emb.weight"
"""The LM head shares the embedding matrix: a checkpoint stores it once, under the embedding's name
(`backbone.` in front when the model carries task heads)."""


def tied_name(name: str) -> str | None:
    """The embedding's name for an LM head weight `name` (any prefix), else None."""
    return name[: -len(HEAD)] + EMBEDDING if name.endswith(HEAD) else None


class CheckpointError(LmforgeError):
    """A checkpoint that cannot be resumed from (missing, corrupt, other architecture)."""


@dataclass
class TrainerState:
    """Everything besides weights and optimizer moments needed to continue a run exactly."""

    step: int
    plateau: dict[str, Any]
    model_config: dict[str, Any]
    best_val_loss: float | None = None
    callbacks: dict[str, Any] = field(default_factory=dict)
    """Each step callback's state dict by name (GradNorm's task weights, a teacher's memory); saved as
    JSON in state.json with its tensors in callbacks.safetensors."""
    stopped: bool = False
    """The run ended early (early stopping): a resume has nothing left to train."""


def step_dir(root: Path, step: int) -> Path:
    return root / f"step_{step:06d}"


def save_checkpoint(root: Path, state: TrainerState, engine: Engine, optimizer: torch.optim.Optimizer,
                    mems: Mems | None, keep: int) -> Path:
    """Write checkpoint `step_<state.step>` under `root` (collective), then prune to the `keep` newest."""
    layout = engine.layout
    weights = get_model_state_dict(engine.core, options=FULL)
    optim = get_optimizer_state_dict(engine.core, optimizer, options=FULL)
    memory = _gather_memory(engine, mems)
    rng = _gather(layout, _rng_state())
    target = step_dir(root, state.step)
    tmp = target.with_name(f".{target.name}.tmp")
    if layout.rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    _barrier(layout)
    if layout.writes_stage:
        suffix = "" if layout.settings.pp == 1 else f"-stage{layout.pp_rank}-of-{layout.settings.pp}"
        for name in [n for n in weights if tied_name(n) in weights]:
            del weights[name]  # tied: stored once
        save_file({k: v.contiguous() for k, v in weights.items()}, str(tmp / f"model{suffix}.safetensors"))
        tensors = {f"opt.{name}.{slot}": torch.as_tensor(value).contiguous()
                   for name, slots in optim["state"].items() for slot, value in slots.items()}
        tensors.update({f"mem.{layer}": mem.contiguous() for layer, mem in memory.items()})
        save_file(tensors, str(tmp / f"trainer{suffix}.safetensors"))
    _barrier(layout)
    if layout.rank == 0:
        groups = [{k: v for k, v in g.items() if k != "params"} for g in optim["param_groups"]]
        callback_tensors: dict[str, torch.Tensor] = {}
        callbacks = encode_state(state.callbacks, callback_tensors)
        save_file(callback_tensors, str(tmp / CALLBACKS))
        atomic_write_json(tmp / STATE, {
            "step": state.step,
            "data_position": state.step,
            "plateau": state.plateau,
            "best_val_loss": state.best_val_loss,
            "callbacks": callbacks,
            "stopped": state.stopped,
            "model_config": state.model_config,
            "optimizer": {"param_groups": groups},
            "rng": rng[0],
            "rng_per_rank": rng,
            "layout": layout.settings.model_dump(),
        })
        old = target.with_name(f".{target.name}.old")
        if target.exists():
            target.rename(old)
        tmp.rename(target)
        shutil.rmtree(old, ignore_errors=True)
        for stale in list_checkpoints(root)[:-keep]:
            shutil.rmtree(stale, ignore_errors=True)
    _barrier(layout)
    return target


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoint folders under `root`, oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.glob("step_*") if p.is_dir() and (p / STATE).is_file()]
    return sorted(found, key=lambda p: p.name)


def latest_checkpoint(root: Path) -> Path | None:
    """The newest intact checkpoint; a damaged newest one (disk corruption, a copy cut short) is skipped.

    Writes are atomic (a folder gets its step name only once complete), so damage comes from
    outside: a state.json that does not parse, or a tensor file whose header does not cover the
    file (safetensors checks that when opening, without reading the tensors).
    """
    for path in reversed(list_checkpoints(root)):
        if _intact(path):
            return path
    return None


def _intact(path: Path) -> bool:
    models, trainers = list(path.glob("model*.safetensors")), list(path.glob("trainer*.safetensors"))
    if not (models and trainers and (path / CALLBACKS).is_file()):
        return False
    try:
        json.loads((path / STATE).read_text())
        for file in [*models, *trainers, path / CALLBACKS]:
            with safe_open(str(file), "pt"):
                pass
    except (OSError, ValueError, SafetensorError):
        return False
    return True


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """Whole-model weights of a checkpoint, merged over its stage files, tied names filled in."""
    weights: dict[str, torch.Tensor] = {}
    for file in sorted(path.glob("model*.safetensors")):
        weights.update(load_file(str(file)))
    for alias in [n[: -len(EMBEDDING)] + HEAD for n in weights if n.endswith(EMBEDDING)]:
        weights.setdefault(alias, weights[tied_name(alias)])
    return weights


def load_checkpoint(path: Path, engine: Engine, optimizer: torch.optim.Optimizer,
                    model_config: dict[str, Any]) -> tuple[TrainerState, Mems]:
    """Restore weights, optimizer and RNG into this rank's share of the model (collective)."""
    meta = json.loads((path / STATE).read_text())
    _check_architecture(path, meta["model_config"], model_config)
    weights = read_weights(path)
    names = list(engine.core.state_dict())
    missing = [n for n in names if n not in weights]
    if missing:
        raise CheckpointError(f"{path}: no weights for {', '.join(missing[:5])} (incomplete checkpoint)")
    set_model_state_dict(engine.core, {n: weights[n] for n in names}, options=FULL)
    tensors: dict[str, torch.Tensor] = {}
    for file in sorted(path.glob("trainer*.safetensors")):
        tensors.update(load_file(str(file)))
    _restore_optimizer(engine, optimizer, tensors, meta["optimizer"])
    _restore_rng_streams(engine.layout, meta)
    callback_tensors = load_file(str(path / CALLBACKS)) if (path / CALLBACKS).is_file() else {}
    state = TrainerState(step=meta["step"], plateau=meta["plateau"], model_config=meta["model_config"],
                         best_val_loss=meta.get("best_val_loss"),
                         callbacks=decode_state(meta.get("callbacks", {}), callback_tensors),
                         stopped=meta.get("stopped", False))
    return state, _split_memory(engine, tensors, path)


def _check_architecture(path: Path, saved: dict[str, Any], wanted: dict[str, Any]) -> None:
    ignore = {"dropout", "preset"}
    diff = [k for k in sorted(set(saved) | set(wanted)) if k not in ignore and saved.get(k) != wanted.get(k)]
    if diff:
        detail = ", ".join(f"{k}: checkpoint {saved.get(k)!r} vs config {wanted.get(k)!r}" for k in diff)
        raise CheckpointError(f"{path}: checkpoint is for another architecture ({detail})")


def _restore_optimizer(engine: Engine, optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                       scalars: dict) -> None:
    current = get_optimizer_state_dict(engine.core, optimizer, options=FULL)
    state = {}
    for name, slots in current["state"].items():
        stored = tied_name(name) or name if f"opt.{name}.step" not in tensors else name
        state[name] = {slot: tensors[f"opt.{stored}.{slot}"] for slot in slots}
    groups = [{**group, **saved} for group, saved in zip(current["param_groups"], scalars["param_groups"],
                                                         strict=True)]
    set_optimizer_state_dict(engine.core, optimizer, {"state": state, "param_groups": groups}, options=FULL)


def _gather_memory(engine: Engine, mems: Mems | None) -> dict[int, torch.Tensor]:
    """Each layer's memory over the whole batch (rows in batch order), on this stage's writer."""
    if not mems or not mems[0]:
        return {}
    local = {layer: torch.cat([micro[i] for micro in mems]) for i, layer in enumerate(engine.layers)}
    layout = engine.layout
    if not layout.distributed or layout.settings.dp == 1:
        return local
    everyone = _gather(layout, (layout.pp_rank, layout.tp_rank, layout.dp_rank, local))
    mine = sorted((dp, part) for pp, tp, dp, part in everyone if pp == layout.pp_rank and tp == 0)
    return {layer: torch.cat([part[layer] for _, part in mine]) for layer in local}


def _split_memory(engine: Engine, tensors: dict[str, torch.Tensor], path: Path) -> Mems:
    """This rank's rows of each of its layers' memory, cut into its micro-batches."""
    if not any(k.startswith("mem.") for k in tensors):
        return []
    rows = slice(engine.layout.dp_rank * engine.local_batch, (engine.layout.dp_rank + 1) * engine.local_batch)
    per_layer = []
    for layer in engine.layers:
        whole = tensors.get(f"mem.{layer}")
        if whole is None or whole.shape[0] != engine.local_batch * engine.layout.settings.dp:
            raise CheckpointError(f"{path}: memory of layer {layer} is missing or was written for another "
                                  "batch size; resume with the batch size the checkpoint was written at")
        per_layer.append(whole[rows].split(engine.micro_batch))
    return [list(micro) for micro in zip(*per_layer, strict=True)]


def _restore_rng_streams(layout: Layout, meta: dict[str, Any]) -> None:
    """Each rank's own RNG state at the layout that wrote it; at another layout, distinct fresh streams.

    Streams differ per data-parallel slice and pipeline stage (dropout masks must not repeat
    across ranks that see different rows) and agree across tensor-parallel ranks.
    """
    per_rank = meta.get("rng_per_rank") or [meta["rng"]]
    if meta.get("layout") == layout.settings.model_dump() and len(per_rank) == layout.world:
        _restore_rng(per_rank[layout.rank])
        return
    _restore_rng(per_rank[0])
    if layout.distributed:
        torch.manual_seed(int(torch.randint(2**62, ())) + layout.random_stream)


def _gather(layout: Layout, value: Any) -> list[Any]:
    if not layout.distributed:
        return [value]
    everyone: list[Any] = [None] * layout.world
    dist.all_gather_object(everyone, value)
    return everyone


def _barrier(layout: Layout) -> None:
    if layout.distributed:
        dist.barrier()


def encode_state(value: Any, tensors: dict[str, torch.Tensor], path: str = "cb") -> Any:
    """A callback's state dict as JSON; each tensor moves to `tensors` under its path in the dict and
    leaves {"tensor": path} behind. Safetensors keeps them exact and compact: a distillation
    teacher's recurrence memory is megabytes of floats that JSON would triple."""
    if isinstance(value, torch.Tensor):
        tensors[path] = value.detach().cpu().contiguous()
        return {"tensor": path}
    if isinstance(value, dict):
        return {str(k): encode_state(v, tensors, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode_state(v, tensors, f"{path}.{i}") for i, v in enumerate(value)]
    return value


def decode_state(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of `encode_state` (integer keys, as optimizer state dicts use, come back as int)."""
    if isinstance(value, dict):
        if set(value) == {"tensor"}:
            return tensors[value["tensor"]]
        return {int(k) if k.isdigit() else k: decode_state(v, tensors) for k, v in value.items()}
    if isinstance(value, list):
        return [decode_state(v, tensors) for v in value]
    return value


def _rng_state() -> dict[str, Any]:
    """Every RNG a step draws from: torch (CPU, and this process's GPU: dropout there), Python, NumPy."""
    np_state = np.random.get_state()
    state = {
        "torch": _encode(torch.get_rng_state()),
        "python": repr(random.getstate()),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = _encode(torch.cuda.get_rng_state())
    return state


def _encode(rng: torch.Tensor) -> str:
    return base64.b64encode(rng.numpy().tobytes()).decode()


def _decode(text: str) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(base64.b64decode(text), dtype=np.uint8).copy())


def _restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(_decode(state["torch"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(_decode(state["cuda"]))
    random.setstate(ast.literal_eval(state["python"]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
