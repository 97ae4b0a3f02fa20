"""How one rank runs a training step under any parallel layout (single process included).

`Engine` owns the model as this rank holds it: whole, or one pipeline stage; tensor-parallel
shards; wrapped for data parallel; on the run's device. It turns this rank's rows of a batch
into gradients whose sum over ranks equals the single-process gradient of the global batch,
whatever the objective (language modelling, a task head, several task heads):

- every rank divides its summed loss by the global target count (all-reduced, so masked-LM
  batches with uneven target counts weigh every token equally) times the dp degree, because
  DDP and FSDP average gradients over data-parallel ranks;
- gradient accumulation syncs gradients once, on the last micro-batch;
- a regulariser (a loss term computed from the weights, not the data) joins the last
  micro-batch's backward once per rank: data parallelism averages it back to one copy;
- a teacher's outputs for the same micro-batch reach the objective's loss (distillation);
- pipeline schedules get a loss function that already carries that scale (`scale_grads=False`),
  so nothing rescales on top of it (torchtitan#1733).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from functools import partial
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.distributed.tensor import DTensor, Replicate

from lmforge.errors import LmforgeError
from lmforge.parallel import (
    Layout,
    StageModule,
    apply_data_parallel,
    apply_tensor_parallel,
    build_schedule,
    build_stage,
    stage_layers,
    sync_tied_gradients,
    tied_group,
)
from lmforge.train.objectives import summed_loss

Batch = tuple[Tensor, ...]
"""This rank's rows of one step: tensors whose first dimension is the row."""
Mems = list[list[Tensor]]  # per micro-batch, per layer this rank holds
Regulariser = Callable[[nn.Module], Tensor]
"""A loss term computed from the unwrapped model's weights (L2 pull, EWC, L1 sparsity)."""


class TrainObjective(Protocol):
    """What a training run optimises: its batches, its normaliser and its summed loss.

    `loss` returns the loss *summed* over the targets of `rows` (so that dividing by the global
    target count weighs every target equally, however the batch is cut) and the state carried
    to the same rows of the next step (the recurrence memory; None for independent examples).
    `teacher` is the frozen teacher's output for the same rows, when the run has one.
    """

    causal: bool

    def batch(self, step: int) -> Batch: ...

    def count(self, batch: Batch) -> int: ...

    def loss(self, module: nn.Module, rows: Batch, carry: Any, teacher: Any = None) -> tuple[Tensor, Any]: ...


class Teacher(Protocol):
    """A frozen model whose outputs for a micro-batch reach the objective's loss."""

    def __call__(self, rows: Batch) -> Any: ...


class CompileUnsupported(LmforgeError):
    """A `train.compile` request for a combination the compiler gets wrong."""


class Engine:
    """`model` (built whole and identically seeded on every rank) as this rank holds and trains it."""

    def __init__(self, model: nn.Module, layout: Layout, local_batch: int, micro_batch: int, bf16: bool):
        self.layout, self.bf16 = layout, bf16
        self.config = getattr(getattr(model, "backbone", model), "config", None)
        """The backbone's ModelConfig (None for a foreign module, e.g. a benchmark's baseline)."""
        s = layout.settings
        model.to(layout.device)
        self.stage: StageModule | None = build_stage(model, layout) if s.pp > 1 else None
        core = self.stage if self.stage is not None else model
        self.core = core
        """The unwrapped module: what parameter names and checkpoints refer to."""
        self.module = core
        if layout.distributed:  # parallelism reads lmforge's block structure; one process runs any module
            backbone = core if self.stage is not None else getattr(core, "backbone", core)
            blocks = list(backbone.blocks.values() if self.stage is not None else backbone.blocks)
            if s.tp > 1:
                apply_tensor_parallel(blocks, layout.mesh["tp"], backbone.tok_emb, backbone.lm_head)
            if s.dp > 1:
                self.module = apply_data_parallel(core, blocks, layout.mesh, s)
        self.local_batch = local_batch
        self.micro_batch = local_batch // s.n_microbatches if s.pp > 1 else micro_batch
        self.scale = 1.0
        self.schedule = self.eval_schedule = self.tied = None
        if self.stage is not None:  # schedules set up their buffers for training or evaluation once
            schedule = partial(build_schedule, self.stage, self.module, layout, local_batch, bf16,
                               self._pipe_loss)
            self.schedule, self.eval_schedule = schedule(), schedule()
            self.tied = tied_group(layout)

    def compile(self) -> None:
        """`train.compile`: torch.compile the module as it runs (after sharding and wrapping).

        Refused for xl attention in bf16 on the CPU: there torch 2.13's inductor turns the second
        step (the first with memory) into NaN, while eager, fp32-compiled and the aot_eager
        backend are fine, and the attention core compiled alone matches eager.
        """
        position = getattr(self.config, "position", None)
        if self.bf16 and self.layout.device.type == "cpu" and position == "xl":
            raise CompileUnsupported("train.compile: torch.compile gives NaN for xl attention in bf16 on the "
                                     "CPU (torch 2.13 inductor); use precision=fp32 or compile=false")
        self.module.compile()

    @property
    def layers(self) -> range:
        """Global indices of the layers whose memory this rank keeps."""
        n, s = self.config.n_layers, self.layout.settings
        return stage_layers(n, s.pp)[self.layout.pp_rank] if s.pp > 1 else range(n)

    def _pipe_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        return summed_loss(logits, labels) * self.scale

    def autocast(self):
        """bf16 autocast on the run's device type, or nothing."""
        return torch.autocast(self.layout.device.type, dtype=torch.bfloat16) if self.bf16 else nullcontext()

    def to_device(self, batch: Batch) -> Batch:
        """Move a host batch to the run's device (pinned first, so the copy overlaps on CUDA)."""
        if self.layout.device.type == "cpu":
            return batch
        return tuple(t.pin_memory().to(self.layout.device, non_blocking=True) for t in batch)

    def global_sum(self, values: list[float]) -> list[float]:
        """Sum over ranks where each dp slice counts once (its last stage's tp rank 0 reports)."""
        if not self.layout.distributed:
            return values
        mine = values if self.layout.reports else [0.0] * len(values)
        buffer = torch.tensor(mine, dtype=torch.float64, device=self.layout.device)
        dist.all_reduce(buffer)
        return buffer.tolist()

    def count_targets(self, local: int) -> int:
        """Targets in the global batch, from this rank's count (every dp slice counted once)."""
        if not self.layout.distributed:
            return local
        first_tp0 = self.layout.first_stage and self.layout.tp_rank == 0
        buffer = torch.tensor([float(local) if first_tp0 else 0.0], dtype=torch.float64,
                              device=self.layout.device)
        dist.all_reduce(buffer)
        return int(buffer.item())

    def forward_backward(self, objective: TrainObjective, batch: Batch, carry: Any,
                         regulariser: Regulariser | None = None,
                         teacher: Teacher | None = None) -> tuple[float, Any, float]:
        """Gradients of one optimizer step on this rank's rows.

        Returns the global mean loss of the objective, the new carry, and the regulariser's value.
        """
        batch = self.to_device(batch)
        targets = max(self.count_targets(objective.count(batch)), 1)
        self.scale = self.layout.settings.dp / targets
        if self.stage is not None:
            if regulariser is not None or teacher is not None:
                raise NotImplementedError("pipeline parallel runs take no regulariser or teacher")
            loss_sum, new_carry, penalty = *self._pipeline_step(batch, carry, objective.causal), 0.0
        else:
            loss_sum, new_carry, penalty = self._accumulate(objective, batch, carry, regulariser, teacher)
        if self.tied is not None:
            sync_tied_gradients(self.stage, self.tied)
        return self.global_sum([loss_sum])[0] / targets, new_carry, penalty

    def _accumulate(self, objective: TrainObjective, batch: Batch, carry: Any,
                    regulariser: Regulariser | None, teacher: Teacher | None) -> tuple[float, Any, float]:
        starts = range(0, batch[0].shape[0], self.micro_batch)
        loss_sum, new_carry, penalty = 0.0, [], 0.0
        for k, start in enumerate(starts):
            last = k == len(starts) - 1
            rows = tuple(t[start:start + self.micro_batch] for t in batch)
            with self._sync(last), self.autocast():
                taught = None if teacher is None else teacher(rows)
                loss, carried = objective.loss(self.module, rows, carry[k] if carry else None, taught)
            total = loss * self.scale
            if last and regulariser is not None:
                term = regulariser(self.core)
                penalty = float(term.detach())
                total = total + term
            total.backward()
            loss_sum += float(loss.detach())
            new_carry.append(carried)
        return loss_sum, new_carry, penalty

    def _sync(self, last: bool):
        """Skip the gradient all-reduce on all but the last micro-batch of a step."""
        if hasattr(self.module, "no_sync") and not last:
            return self.module.no_sync()
        if hasattr(self.module, "set_requires_gradient_sync"):
            self.module.set_requires_gradient_sync(last)
        return nullcontext()

    def _pipeline_step(self, batch: Batch, mems: Mems | None, causal: bool,
                       train: bool = True) -> tuple[float, Mems]:
        inputs, labels = batch
        stage = self.stage
        stage.causal = causal
        stage.start(mems)
        losses: list[Tensor] = []
        run = self.schedule.step if train else self.eval_schedule.eval
        args = (inputs,) if stage.first else ()
        with self.autocast():
            # return_outputs=False: the last stage would otherwise keep every micro-batch's logits.
            run(*args, target=labels if stage.last else None, losses=losses if stage.last else None,
                return_outputs=False)
        loss_sum = sum(float(x.detach()) for x in losses) / self.scale if stage.last else 0.0
        return loss_sum, stage.mems_out

    def clip_gradients(self, max_norm: float) -> float:
        """Clip to `max_norm` (0 = off) by the global norm over every rank's gradients; return it."""
        norm = global_grad_norm(self.core, self.layout, skip_tied_head=self.stage is not None)
        if max_norm > 0 and norm > max_norm:
            coefficient = max_norm / (norm + 1e-6)
            for param in self.core.parameters():
                if param.grad is not None:
                    param.grad.mul_(coefficient)
        return norm


def global_grad_norm(module: nn.Module, layout: Layout, skip_tied_head: bool) -> float:
    """L2 norm of all gradients of the model, whatever shards or stages they are spread over.

    Plain gradients are whole on this rank (replicated over dp and tp). DTensor gradients
    (tensor parallel, FSDP) are grouped by mesh and placements: each group's local sum of
    squares is all-reduced once over the mesh dimensions that shard it, rather than one
    collective per parameter. Under pipeline parallel the stages' sums are added, counting the
    tied embedding/LM-head gradient once.
    """
    plain: list[Tensor] = []
    sharded: dict[tuple, torch.Tensor] = {}
    for name, param in module.named_parameters():
        if param.grad is None or (skip_tied_head and name == "lm_head.weight"):
            continue
        grad = param.grad
        if isinstance(grad, DTensor):
            if any(p.is_partial() for p in grad.placements):  # pending sums: finish them first
                grad = grad.redistribute(placements=[Replicate() if p.is_partial() else p
                                                     for p in grad.placements])
            key = (grad.device_mesh, tuple(grad.placements))
            sharded[key] = sharded.get(key, 0.0) + grad.to_local().double().pow(2).sum()
        else:
            plain.append(grad)
    # Whole gradients: one fused norm per dtype (torch's own, as clip_grad_norm_ uses), combined in float64.
    squares = torch.zeros((), dtype=torch.float64, device=layout.device)
    if plain:
        squares += torch.nn.utils.get_total_norm(plain, 2.0, foreach=True).double() ** 2
    for (mesh, placements), local in sharded.items():
        for dim, placement in enumerate(placements):
            if not placement.is_replicate():  # Shard, or FSDP's _StridedShard over tensor parallel
                dist.all_reduce(local, group=mesh.get_group(dim))
        squares += local
    if layout.distributed and layout.settings.pp > 1:
        dist.all_reduce(squares, group=layout.mesh["pp"].get_group())
    return float(squares.sqrt())
