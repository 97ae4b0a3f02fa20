"""How one rank runs a training step under any parallel layout (single process included).

`Engine` owns the model as this rank holds it: whole, or one pipeline stage; tensor-parallel
shards; wrapped for data parallel. It turns a batch slice into gradients whose sum over ranks
equals the single-process gradient of the global batch:

- every rank divides its summed loss by the global target count (all-reduced, so masked-LM
  batches with uneven target counts weigh every token equally) times the dp degree, because
  DDP and FSDP average gradients over data-parallel ranks;
- gradient accumulation syncs gradients once, on the last micro-batch;
- pipeline schedules get a loss function that already carries that scale (`scale_grads=False`),
  so nothing rescales on top of it (torchtitan#1733).
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.distributed.tensor import DTensor, Replicate

from lmforge.model import Transformer
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
from lmforge.tokenizer import SegmentBatches
from lmforge.train.objectives import Objective, count_targets, summed_loss

Mems = list[list[Tensor]]  # per micro-batch, per layer this rank holds
EVAL_DRAW_OFFSET = 10**9  # masks drawn for evaluation never coincide with training draws


class Engine:
    """`model` (built whole and identically seeded on every rank) as this rank holds and trains it."""

    def __init__(self, model: Transformer, layout: Layout, local_batch: int, micro_batch: int, bf16: bool):
        self.layout, self.config, self.bf16 = layout, model.config, bf16
        s = layout.settings
        self.stage: StageModule | None = build_stage(model, layout) if s.pp > 1 else None
        core = self.stage if self.stage is not None else model
        blocks = list(core.blocks.values() if self.stage is not None else core.blocks)
        if s.tp > 1:
            apply_tensor_parallel(blocks, layout.mesh["tp"], core.tok_emb, core.lm_head)
        self.core = core
        """The unwrapped module: what parameter names and checkpoints refer to."""
        self.module = apply_data_parallel(core, blocks, layout.mesh, s) if s.dp > 1 else core
        self.local_batch = local_batch
        self.micro_batch = local_batch // s.n_microbatches if s.pp > 1 else micro_batch
        self.scale = 1.0
        self.schedule = self.eval_schedule = self.tied = None
        if self.stage is not None:  # schedules set up their buffers for training or evaluation once
            self.schedule = build_schedule(self.stage, self.module, layout, local_batch, bf16,
                                           self._pipe_loss)
            self.eval_schedule = build_schedule(self.stage, self.module, layout, local_batch, bf16,
                                                self._pipe_loss)
            self.tied = tied_group(layout)

    @property
    def layers(self) -> range:
        """Global indices of the layers whose memory this rank keeps."""
        n, s = self.config.n_layers, self.layout.settings
        return stage_layers(n, s.pp)[self.layout.pp_rank] if s.pp > 1 else range(n)

    def _pipe_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        return summed_loss(logits, labels) * self.scale

    def _autocast(self):
        return torch.autocast("cpu", dtype=torch.bfloat16) if self.bf16 else nullcontext()

    def global_sum(self, values: list[float]) -> list[float]:
        """Sum over ranks where each dp slice counts once (its last stage's tp rank 0 reports)."""
        if not self.layout.distributed:
            return values
        mine = values if self.layout.reports else [0.0] * len(values)
        buffer = torch.tensor(mine, dtype=torch.float64)
        dist.all_reduce(buffer)
        return buffer.tolist()

    def count_targets(self, labels: Tensor) -> int:
        """Targets in the global batch (every dp slice counted once)."""
        local = float(count_targets(labels))
        if not self.layout.distributed:
            return int(local)
        first_tp0 = self.layout.first_stage and self.layout.tp_rank == 0
        buffer = torch.tensor([local if first_tp0 else 0.0], dtype=torch.float64)
        dist.all_reduce(buffer)
        return int(buffer.item())

    def forward_backward(self, inputs: Tensor, labels: Tensor, mems: Mems | None,
                         causal: bool) -> tuple[float, Mems]:
        """Gradients of one optimizer step on this rank's rows; returns the global mean loss and new mems."""
        targets = max(self.count_targets(labels), 1)
        self.scale = self.layout.settings.dp / targets
        if self.stage is not None:
            loss_sum, new_mems = self._pipeline_step(inputs, labels, mems, causal)
        else:
            loss_sum, new_mems = self._accumulate(inputs, labels, mems, causal)
        if self.tied is not None:
            sync_tied_gradients(self.stage, self.tied)
        return self.global_sum([loss_sum])[0] / targets, new_mems

    def _accumulate(self, inputs: Tensor, labels: Tensor, mems: Mems | None,
                    causal: bool) -> tuple[float, Mems]:
        starts = range(0, inputs.shape[0], self.micro_batch)
        loss_sum, new_mems = 0.0, []
        for k, start in enumerate(starts):
            rows = slice(start, start + self.micro_batch)
            with self._sync(last=k == len(starts) - 1), self._autocast():
                out = self.module(inputs[rows], mems[k] if mems else None, causal=causal)
                loss = summed_loss(out.logits, labels[rows])
            (loss * self.scale).backward()
            loss_sum += float(loss.detach())
            new_mems.append(out.mems)
        return loss_sum, new_mems

    def _sync(self, last: bool):
        """Skip the gradient all-reduce on all but the last micro-batch of a step."""
        if hasattr(self.module, "no_sync") and not last:
            return self.module.no_sync()
        if hasattr(self.module, "set_requires_gradient_sync"):
            self.module.set_requires_gradient_sync(last)
        return nullcontext()

    def _pipeline_step(self, inputs: Tensor, labels: Tensor, mems: Mems | None, causal: bool,
                       train: bool = True) -> tuple[float, Mems]:
        stage = self.stage
        stage.causal = causal
        stage.start(mems)
        losses: list[Tensor] = []
        run = self.schedule.step if train else self.eval_schedule.eval
        args = (inputs,) if stage.first else ()
        with self._autocast():
            # return_outputs=False: the last stage would otherwise keep every micro-batch's logits.
            run(*args, target=labels if stage.last else None, losses=losses if stage.last else None,
                return_outputs=False)
        loss_sum = sum(float(x.detach()) for x in losses) / self.scale if stage.last else 0.0
        return loss_sum, stage.mems_out

    @torch.no_grad()
    def evaluate(self, batches: SegmentBatches, objective: Objective, max_segments: int,
                 rows: tuple[int, int]) -> dict[str, float]:
        """Mean validation loss over the global batch, reading segments in order with memory."""
        self.module.eval()
        total, count, mems = 0.0, 0, None
        n = batches.n_segments if max_segments <= 0 else min(max_segments, batches.n_segments)
        for i in range(n):
            x, y = batches.batch(i)
            inputs, labels = objective.prepare(x, y, EVAL_DRAW_OFFSET + i, rows)
            if self.stage is not None:
                self.scale = 1.0
                loss_sum, mems = self._pipeline_step(inputs, labels, mems, objective.causal, train=False)
            else:
                with self._autocast():
                    out = self.module(inputs, mems[0] if mems else None, causal=objective.causal)
                mems = [out.mems]
                loss_sum = float(summed_loss(out.logits, labels))
            total += loss_sum
            count += count_targets(labels)
        self.module.train()
        total, count = self.global_sum([total, float(count)])
        loss = total / max(count, 1.0)
        return {"loss": loss, "ppl": math.exp(min(loss, 50.0)), "tokens": count}

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
    squares = torch.zeros((), dtype=torch.float64)
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
            squares += grad.double().pow(2).sum()
    for (mesh, placements), local in sharded.items():
        for dim, placement in enumerate(placements):
            if not placement.is_replicate():  # Shard, or FSDP's _StridedShard over tensor parallel
                dist.all_reduce(local, group=mesh.get_group(dim))
        squares += local
    if layout.distributed and layout.settings.pp > 1:
        dist.all_reduce(squares, group=layout.mesh["pp"].get_group())
    return float(squares.sqrt())
