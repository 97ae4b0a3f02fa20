"""The one training loop: every run (pretraining, fine-tuning, multi-task) is a configuration of it.

A step: set the rate (warm-up + cosine, times the plateau factor), take batch `step` of the
objective (a pure function of the step), forward/backward through `Engine` (accumulation, bf16,
any parallel layout), stop on a non-finite loss, clip, step AdamW, run the step callbacks, log,
evaluate, checkpoint. Everything a step depends on (weights, moments, carried state, RNG,
plateau, callbacks) is in the checkpoint, so a resumed run continues the same trajectory.

Plug points, each a plain callable or small protocol:
- `regularisers`: loss terms computed from the weights (L2 pull to a reference, EWC, L1);
- `teacher`: a frozen model whose outputs for each micro-batch reach the objective's loss;
- `transforms`: functions applied to the model before it is sharded or wrapped (fake
  quantisation, pruning masks);
- `callbacks`: run after every optimizer step (GradNorm's weight update, extra log values).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import set_model_state_dict
from tqdm import tqdm

from lmforge.errors import LmforgeError
from lmforge.parallel import Layout
from lmforge.train.checkpoint import (
    FULL,
    CheckpointError,
    TrainerState,
    latest_checkpoint,
    load_checkpoint,
    read_weights,
    save_checkpoint,
)
from lmforge.train.config import OptimSettings
from lmforge.train.engine import Engine, Regulariser, Teacher, TrainObjective
from lmforge.train.metrics import MetricsLog
from lmforge.train.schedule import Plateau, warmup_cosine

Transform = Callable[[nn.Module], nn.Module]


class TrainingDiverged(LmforgeError):
    """The loss became NaN/inf; the run stopped without writing the bad weights."""


class StepCallback(Protocol):
    """Runs after every optimizer step; its state is saved in each checkpoint.

    `after_step` sees the step's record (loss, lr, grad_norm, seconds) and returns values to add
    to it and to the metrics log (may be empty).
    """

    name: str

    def after_step(self, step: int, record: dict[str, Any], engine: Engine) -> dict[str, float]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class Monitor:
    """What evaluation means for a run and what a plateau does.

    `evaluate` returns metrics that are the same on every rank; None = a run without evaluation
    (a benchmark's). `metric` is the one watched:
    lower is better unless `higher_is_better`. After `patience` evaluations without a new
    best, "cut_lr" multiplies the rate by `factor` (pretraining), "stop" ends the run
    (fine-tuning's early stopping), "none" only records (multi-task: several dev metrics, no
    single best). `keep_best` writes a checkpoint of every new best under
    `best/` and leaves the best weights in the model at the end.
    """

    evaluate: Callable[[], dict[str, float]] | None
    metric: str = "loss"
    higher_is_better: bool = False
    on_plateau: Literal["cut_lr", "stop", "none"] = "cut_lr"
    patience: int = 3
    factor: float = 0.1
    keep_best: bool = False

    def plateau(self) -> Plateau:
        return Plateau(self.patience, self.factor if self.on_plateau == "cut_lr" else 1.0)


    def score(self, metrics: dict[str, float]) -> float:
        """The watched value as a loss (lower is better), which is what `Plateau` tracks."""
        value = metrics[self.metric]
        return -value if self.higher_is_better else value


@dataclass
class PlugPoints:
    regularisers: Sequence[Regulariser] = ()
    teacher: Teacher | None = None
    transforms: Sequence[Transform] = ()
    callbacks: Sequence[StepCallback] = ()


@dataclass
class TrainResult:
    steps: int
    """Optimizer steps taken in total (resumed runs included)."""
    first: dict[str, float] | None
    """Evaluation before the first step (None when the run was resumed)."""
    last: dict[str, float]
    """The final evaluation (of the best weights, when the monitor keeps them)."""
    best_step: int | None = None
    stopped_early: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    """Seed torch, NumPy and Python's `random`: the checkpoint stores all three, so a run started
    twice (or resumed) must not carry whatever state the process happened to start with."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def adamw(model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float] = (0.9, 0.999),
          foreach: bool = True) -> torch.optim.AdamW:
    """AdamW with decay on matrices only: decaying gains, biases and u/v offsets only hurts."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # foreach kernels cannot mix the DTensor and plain parameters of a sharded model.
    return torch.optim.AdamW(groups, lr=lr, betas=betas, foreach=foreach)


def apply_transforms(model: nn.Module, transforms: Sequence[Transform]) -> nn.Module:
    for transform in transforms:
        model = transform(model)
    return model


class Trainer:
    """One run: `engine` holds the model as this rank trains it; `objective` says what to optimise.

    Build the model, apply `plugs.transforms` (`apply_transforms`), build the `Engine`, then the
    objective for this rank, then the Trainer. `architecture` is what a checkpoint must match to
    be resumed (the model config, plus the heads for fine-tuning). `ckpt_root` None: a run that
    keeps nothing on disk (no checkpoints, no metrics log), as benchmarks run.
    """

    def __init__(self, engine: Engine, objective: TrainObjective, settings: OptimSettings,
                 monitor: Monitor | None, ckpt_root: Path | None, architecture: dict[str, Any], name: str,
                 plugs: PlugPoints | None = None,
                 progress: Callable[[dict[str, Any]], dict[str, str]] | None = None):
        self.engine, self.objective, self.settings = engine, objective, settings
        self.monitor = monitor or Monitor(evaluate=None, on_plateau="none")
        self.ckpt_root, self.architecture, self.name = ckpt_root, architecture, name
        self.plugs = plugs or PlugPoints()
        self.progress = progress or (lambda record: {})
        self.optimizer = adamw(engine.core, settings.lr, settings.weight_decay, settings.betas,
                               foreach=not engine.layout.distributed)
        self.is_writer = engine.layout.rank == 0

    @property
    def layout(self) -> Layout:
        return self.engine.layout

    def fit(self, resume: str | None = "auto") -> TrainResult:
        """Train to `settings.steps` (or an early stop), from scratch or from `resume`."""
        state, carry = self._restore(resume)
        plateau = Plateau.from_state(state.plateau)
        keeps = self.is_writer and self.ckpt_root is not None
        log = MetricsLog(self.ckpt_root, resume_step=state.step) if keeps else None
        result = TrainResult(steps=state.step, first=None, last={})
        try:
            if state.step == 0 and self.monitor.evaluate:
                result.first = self.monitor.evaluate()
                self._write(log, 0, {f"val_{k}": v for k, v in result.first.items()})
            self._loop(state, plateau, carry, log, result)
        finally:
            if log:
                log.close()
        keeps_best = self.monitor.keep_best and self.ckpt_root is not None
        best = latest_checkpoint(self.ckpt_root / "best") if keeps_best else None
        if best is not None:
            weights = read_weights(best)
            set_model_state_dict(self.engine.core, {n: weights[n] for n in self.engine.core.state_dict()},
                                 options=FULL)
            result.best_step = int(best.name.split("_")[1])
        result.last = self.monitor.evaluate() if self.monitor.evaluate else {}
        return result

    def _restore(self, resume: str | None) -> tuple[TrainerState, Any]:
        """Start fresh, or continue from `resume` ("auto" = newest valid checkpoint, or a path)."""
        fresh = TrainerState(step=0, plateau=self.monitor.plateau().state_dict(),
                             model_config=self.architecture)
        if resume is None or self.ckpt_root is None:
            return fresh, None
        path = latest_checkpoint(self.ckpt_root) if resume == "auto" else Path(resume)
        if path is None:
            return fresh, None
        if not (path / "state.json").is_file():
            raise CheckpointError(f"{path}: not a checkpoint folder (expected step_NNNNNN/ with state.json)")
        state, carry = load_checkpoint(path, self.engine, self.optimizer, self.architecture)
        for callback in self.plugs.callbacks:
            if callback.name in state.callbacks:
                callback.load_state_dict(state.callbacks[callback.name])
        if self.is_writer:
            tqdm.write(f"resumed from {path} (step {state.step})")
        return state, carry or None

    def _loop(self, state: TrainerState, plateau: Plateau, carry: Any, log: MetricsLog | None,
              result: TrainResult) -> None:
        s, engine = self.settings, self.engine
        regulariser = _combined(self.plugs.regularisers)
        engine.module.train()
        bar = tqdm(total=s.steps, initial=state.step, desc=self.name, unit="step", dynamic_ncols=True,
                   disable=not self.is_writer)
        try:
            while state.step < s.steps and not state.stopped:
                step, started = state.step, time.perf_counter()
                lr = warmup_cosine(step, s.steps, s.lr, s.warmup_fraction, s.min_lr_ratio) * plateau.scale
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                batch = self.objective.batch(step)
                loss, carry, penalty = engine.forward_backward(self.objective, batch, carry, regulariser,
                                                               self.plugs.teacher)
                if not math.isfinite(loss):
                    raise TrainingDiverged(self._diverged_message(step, loss))
                grad_norm = engine.clip_gradients(s.grad_clip)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                state.step += 1
                record: dict[str, Any] = {"loss": loss, "lr": lr, "grad_norm": grad_norm,
                                          "seconds": time.perf_counter() - started}
                if regulariser is not None:
                    record["penalty"] = penalty
                for callback in self.plugs.callbacks:
                    record.update(callback.after_step(state.step, record, engine))
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", **self.progress(record))
                result.history.append({"step": state.step, **record})
                if state.step % s.log_every == 0 or state.step == s.steps:
                    self._write(log, state.step, record)
                stop = False
                if self.monitor.evaluate and (state.step % s.eval_every == 0 or state.step == s.steps):
                    stop = state.stopped = self._evaluate_and_adapt(state, plateau, carry, log, bar)
                if self.ckpt_root and (state.step % s.checkpoint_every == 0 or state.step == s.steps or stop):
                    self._save(self.ckpt_root, state, plateau, carry, s.keep_checkpoints)
                if stop:
                    break
        finally:
            bar.close()
        result.steps, result.stopped_early = state.step, state.stopped

    def _evaluate_and_adapt(self, state: TrainerState, plateau: Plateau, carry: Any, log: MetricsLog | None,
                            bar: tqdm) -> bool:
        """Evaluate, feed the plateau tracker, keep a new best; True when the run should stop."""
        metrics = self.monitor.evaluate()  # the same figures on every rank, so every rank acts alike
        improved = self.monitor.score(metrics) < plateau.best
        hit = plateau.update(self.monitor.score(metrics))
        state.best_val_loss = plateau.best
        self._write(log, state.step, {**{f"val_{k}": v for k, v in metrics.items()},
                                      "lr_scale": plateau.scale})
        bar.set_postfix_str(f"{self.monitor.metric} {metrics[self.monitor.metric]:.4f}")
        if improved and self.monitor.keep_best and self.ckpt_root:
            self._save(self.ckpt_root / "best", state, plateau, carry, keep=1)
        if hit and self.monitor.on_plateau == "cut_lr":
            bar.write(f"step {state.step}: validation {self.monitor.metric} plateaued; "
                      f"learning rate x{plateau.factor}")
        return hit and self.monitor.on_plateau == "stop"

    def _save(self, root: Path, state: TrainerState, plateau: Plateau, carry: Any, keep: int) -> None:
        state.plateau = plateau.state_dict()
        state.callbacks = {c.name: c.state_dict() for c in self.plugs.callbacks}
        save_checkpoint(root, state, self.engine, self.optimizer, carry, keep)

    def _write(self, log: MetricsLog | None, step: int, values: dict[str, Any]) -> None:
        if log:
            log.write(step, **values)

    def _diverged_message(self, step: int, loss: float) -> str:
        last = latest_checkpoint(self.ckpt_root) if self.ckpt_root else None
        kept = f"last good checkpoint kept at {last}" if last else "no checkpoint had been written yet"
        return (f"step {step}: loss is {loss} (not finite); training stopped, {kept}. "
                f"Try a lower lr (now {self.settings.lr}) or grad_clip.")


def _combined(regularisers: Sequence[Regulariser]) -> Regulariser | None:
    if not regularisers:
        return None

    def total(module: nn.Module) -> torch.Tensor:
        terms = [term(module) for term in regularisers]
        return terms[0] if len(terms) == 1 else torch.stack(terms).sum()

    return total

