"""Pipeline parallelism: the layer stack cut into stages, run by GPipe or 1F1B schedules.

Each rank of the pp dimension holds one `StageModule`: a contiguous range of blocks (the first
stage also the embeddings, the last the final norm and LM head) under the same parameter names
as in the whole model, so checkpoints move between layouts by name.

Transformer-XL memory never travels: the memory of a layer is that layer's input from the
previous segment, so it stays on the stage that owns the layer. A stage keeps one memory per
micro-batch (micro-batch k is the same rows of the batch at every step) and hands micro-batch
k's memory to its k-th forward call; both schedules run forwards in micro-batch order.

The LM head is tied to the embedding, but under pp they live on the first and last stages.
The last stage gets its own copy of the matrix, and after every backward the two halves of the
gradient are summed between the two stages (`sync_tied_gradients`), so the copies never drift.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe
from torch.distributed.tensor import DTensor

from lmforge.model import Transformer
from lmforge.model.xl import attention_mask, run_blocks
from lmforge.parallel.config import stage_layers
from lmforge.parallel.mesh import Layout

SCHEDULES = {"gpipe": ScheduleGPipe, "1f1b": Schedule1F1B}


class StageModule(nn.Module):
    """The blocks of one stage, plus embeddings (first stage) or norm and LM head (last stage)."""

    def __init__(self, model: Transformer, layers: range, first: bool, last: bool):
        super().__init__()
        self.config = model.config
        self.first, self.last = first, last
        self.tok_emb = model.tok_emb if first else None
        self.pos_emb = model.pos_emb if first else None
        self.drop = model.drop
        self.blocks = nn.ModuleDict({str(i): model.blocks[i] for i in layers})
        self.norm = model.norm if last else None
        self.lm_head = None
        if last:
            self.lm_head = nn.Linear(model.config.d_model, model.config.vocab_size, bias=False)
            self.lm_head.weight = nn.Parameter(model.tok_emb.weight.detach().clone())
        self.causal = True
        self.mems_in: list[list[Tensor]] = []
        self.mems_out: list[list[Tensor]] = []

    def start(self, mems: list[list[Tensor]] | None) -> None:
        """Begin a step whose micro-batch k continues after `mems[k]` (None: no memory yet)."""
        self.mems_in, self.mems_out = mems or [], []

    def forward(self, x: Tensor) -> Tensor:
        k = len(self.mems_out)
        mems = self.mems_in[k] if k < len(self.mems_in) else None
        t = x.size(1)
        mlen = mems[0].size(1) if mems else 0
        if self.first:
            x = Transformer.embed(self, x, mlen)  # same-named modules as the model's
        mask = attention_mask(t, mlen, self.causal, None, x.device)
        x, new_mems = run_blocks(self.blocks.values(), x, mems, mask, self.causal, self.config.mem_len)
        if new_mems and not self.first and mems is None:
            # The first layer's memory is a view of x, which lives in the schedule's receive
            # buffer: the next micro-batch would overwrite it.
            new_mems[0] = new_mems[0].clone()
        self.mems_out.append(new_mems)
        return self.lm_head(self.norm(x)) if self.last else x


def build_stage(model: Transformer, layout: Layout) -> StageModule:
    """This rank's stage of `model` (built whole, identically seeded on every rank)."""
    pp, rank = layout.settings.pp, layout.pp_rank
    return StageModule(model, stage_layers(model.config.n_layers, pp)[rank], rank == 0, rank == pp - 1)


def build_schedule(stage: StageModule, module: nn.Module, layout: Layout, local_batch: int, bf16: bool,
                   loss_fn: Callable[[Tensor, Tensor], Tensor]):
    """A GPipe or 1F1B schedule over `module` (the stage, possibly wrapped for data parallel).

    Shapes are given up front (static mode), so the schedule never runs an extra forward to
    infer them; that forward would consume a micro-batch's memory.
    """
    s, c = layout.settings, stage.config
    micro = local_batch // s.n_microbatches
    hidden = torch.empty(micro, c.seq_len, c.d_model, device="meta", requires_grad=True)  # grads flow back
    inputs = torch.empty(micro, c.seq_len, dtype=torch.long, device="meta") if stage.first else hidden
    out_dtype = torch.bfloat16 if bf16 else torch.float32
    outputs = torch.empty(micro, c.seq_len, c.vocab_size, dtype=out_dtype, device="meta") if stage.last \
        else hidden
    pipe_stage = PipelineStage(module, layout.pp_rank, s.pp, layout.device, input_args=inputs,
                               output_args=outputs, group=layout.mesh["pp"].get_group())
    return SCHEDULES[s.pp_schedule](pipe_stage, n_microbatches=s.n_microbatches, loss_fn=loss_fn,
                                    scale_grads=False)


def tied_group(layout: Layout) -> dist.ProcessGroup | None:
    """The (first stage, last stage) pair of ranks with this rank's dp/tp coordinates, if pp > 1."""
    if layout.settings.pp < 2:
        return None
    ranks = layout.mesh.mesh
    mine = None
    for index in itertools.product(*(range(n) for n in ranks.shape[1:])):
        pair = [int(ranks[(0, *index)]), int(ranks[(-1, *index)])]
        group = dist.new_group(pair)  # every rank creates every group, in the same order
        if layout.rank in pair:
            mine = group
    return mine


def sync_tied_gradients(stage: StageModule, group: dist.ProcessGroup | None) -> None:
    """Sum the embedding's and the LM head's gradient halves, so both copies take the same step."""
    if group is None:
        return
    param = stage.tok_emb.weight if stage.first else stage.lm_head.weight if stage.last else None
    if param is None or param.grad is None:
        return
    grad = param.grad
    if isinstance(grad, DTensor):
        if grad.placements != param.placements:  # the vocab-parallel embedding's grad comes back replicated
            param.grad = grad = grad.redistribute(placements=param.placements)
        grad = grad.to_local()
    dist.all_reduce(grad, group=group)
