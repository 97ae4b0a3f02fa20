"""Elastic weight consolidation (Kirkpatrick et al. 2017): the diagonal Fisher, the state a model
folder carries from one incremental round to the next, and the penalty terms the trainer adds.

Training on new data moves every weight; EWC makes the weights the old task relied on expensive
to move. With theta* the weights after the old task and F the diagonal of its Fisher information,
each step minimises

    L_new(theta) + (lambda / 2) * sum_i F_i * (theta_i - theta*_i)^2

Kirkpatrick et al.'s convention, with the 1/2: the penalty's gradient is lambda * F * (theta -
theta*). Avalanche's `EWCPlugin` adds lambda * sum F (theta - theta*)^2 without the 1/2, so its
lambda is twice ours for the same penalty (Avalanche 0.4 = lambda 0.8 here). The term goes through
the trainer's regulariser plug point as `train.regularisers.WeightPull`, one per (theta*, F) pair.
The Fisher below takes gradients but updates nothing: it is a statistic of the loss at fixed
weights (no optimizer, no step), so it is measured here, and all training goes through the trainer.

The Fisher is the empirical one (gradients of the loss at the true labels, not of labels sampled
from the model), in eval mode (no dropout), as Avalanche computes it. Two estimators:

- "example" (the default): the mean over examples of each example's squared gradient. This is
  the Fisher information of one example, which is what EWC's Laplace approximation needs, and it
  does not depend on a batch size. At theta*, where the mean gradient is near zero, the batched
  estimate below is about this divided by the batch size, so lambda would silently change meaning
  with `batch_size`. The price is one gradient per example (torch.func vmaps a chunk of them in
  one pass, about as fast as a training step on that many examples); sampling bounds it.
- "batch": Avalanche's: the squared gradient of each mini-batch's mean loss, averaged over the
  batches. It holds no per-example gradients; use it to reproduce Avalanche's lambda values
  (times 2, as above) at Avalanche's batch size.

For NER an example is a sentence (its loss is the mean over its tagged words, as in training).
Parameters that receive no gradient (another task's head, an LM head) get no Fisher and are never
pulled; parameters that did not exist when a Fisher was computed (a head added later) neither.

Two ways to keep several past rounds (Avalanche's `mode`):

- separate: one (theta*, F) pair per Fisher computed, each its own pull (memory grows by two
  model copies a round);
- online: one pair: F <- decay * F_old + F_new, theta* the newest weights (two copies in all).

A model folder made by an EWC round holds the state as `ewc.safetensors` (the tensors) and
`ewc.json` (mode, decay, the convention, and where each Fisher came from), so the next round
continues it without the old data.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from lmforge.artifacts import ArtifactError, atomic_write_bytes, atomic_write_json
from lmforge.model.masking import IGNORE_INDEX
from lmforge.train.finetune_data import Encoded, batch
from lmforge.train.regularisers import WeightPull

Estimator = Literal["example", "batch"]
Mode = Literal["separate", "online"]
CONVENTION = ("(lambda/2) * sum_i F_i * (theta_i - theta*_i)^2 (Kirkpatrick et al. 2017; "
              "Avalanche's lambda = 2x ours)")
STATE_JSON = "ewc.json"
STATE_TENSORS = "ewc.safetensors"
PER_EXAMPLE_BYTES = 1 << 28
"""At most this many bytes of per-example gradients are held at once (the chunk of examples vmapped)."""


def fisher_diagonal(model: nn.Module, head: str, data: Encoded, estimator: Estimator = "example",
                    batch_size: int = 32) -> dict[str, Tensor]:
    """The empirical diagonal Fisher of head `head`'s loss on `data` at `model`'s weights, by
    parameter name (see the module docstring for the estimators). `batch_size` examples go through
    one backward pass: the batch estimator's mini-batch, or at most that many per-example gradients
    at once. Examples without a target (a sentence whose words were all cut off) are left out."""
    was_training = model.training
    model.eval()
    rows = [i for i, t in enumerate(data.targets)
            if not isinstance(t, list) or any(x != IGNORE_INDEX for x in t)]
    try:
        learning = _learning(model, head, data, rows)
        if estimator == "example":
            sums, count = _per_example(model, head, data, rows, learning, batch_size)
        else:
            sums, count = _per_batch(model, head, data, rows, learning, batch_size)
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return {name: (total / max(count, 1)).cpu() for name, total in sums.items()}


def _learning(model: nn.Module, head: str, data: Encoded, rows: list[int]) -> dict[str, Tensor]:
    """The parameters the head's loss reaches (another head, an untied LM head: not these)."""
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    if not rows:
        return {}
    loss = _loss(model, head, data, rows[:8])
    grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    return {name: p for (name, p), g in zip(params.items(), grads, strict=True) if g is not None}


def _loss(model: nn.Module, head: str, data: Encoded, rows: Sequence[int]) -> Tensor:
    device = next(model.parameters()).device
    idx, mask, labels = (t.to(device) for t in batch(data, rows))
    return model(head, idx, mask, labels=labels)[0]


def _per_batch(model: nn.Module, head: str, data: Encoded, rows: list[int], learning: dict[str, Tensor],
               batch_size: int) -> tuple[dict[str, Tensor], int]:
    """Avalanche's: sum over mini-batches of the squared gradient of the batch's mean loss."""
    sums = {name: torch.zeros_like(p) for name, p in learning.items()}
    chunks = [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)]
    for chunk in chunks:
        model.zero_grad(set_to_none=True)
        _loss(model, head, data, chunk).backward()
        for name, p in learning.items():
            if p.grad is not None:
                sums[name] += p.grad.detach().pow(2)
    return sums, len(chunks)


def _per_example(model: nn.Module, head: str, data: Encoded, rows: list[int], learning: dict[str, Tensor],
                 batch_size: int) -> tuple[dict[str, Tensor], int]:
    """Sum over examples of each example's squared gradient, the examples of a chunk at once
    (torch.func: the gradient of a batch-of-one loss, vmapped over the padded chunk's rows)."""
    params = {name: p.detach() for name, p in learning.items()}
    buffers = dict(model.named_buffers())
    device = next(model.parameters()).device

    def loss(weights: dict[str, Tensor], idx: Tensor, mask: Tensor, labels: Tensor) -> Tensor:
        return functional_call(model, (weights, buffers), (head, idx[None], mask[None]),
                               {"labels": labels[None]})[0]

    per_example = vmap(grad(loss), in_dims=(None, 0, 0, 0))
    size = sum(p.numel() * p.element_size() for p in params.values())
    chunk = max(1, min(batch_size, PER_EXAMPLE_BYTES // max(size, 1)))
    sums = {name: torch.zeros_like(p) for name, p in params.items()}
    for start in range(0, len(rows), chunk):
        idx, mask, labels = (t.to(device) for t in batch(data, rows[start:start + chunk]))
        for name, g in per_example(params, idx, mask, labels).items():
            sums[name] += g.pow(2).sum(0)
    return sums, len(rows)


@dataclass
class Consolidated:
    """One (theta*, F) pair: weights to stay near and how much each one matters."""

    anchor: dict[str, Tensor]
    fisher: dict[str, Tensor]


@dataclass
class EwcState:
    """The pairs a model carries into its next round, and where each Fisher came from."""

    mode: Mode
    decay: float = 1.0
    """online: the factor on the old sum when a new Fisher joins it."""
    entries: list[Consolidated] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    """One record per Fisher that joined, in order: data file, examples, model folder, estimator."""

    def consolidate(self, model: nn.Module, fisher: dict[str, Tensor], about: dict[str, Any]) -> EwcState:
        """The state with `fisher`, computed at `model`'s current weights, added to it."""
        weights = dict(model.named_parameters())
        history = [*self.history, about]
        if self.mode == "separate" or not self.entries:
            pair = Consolidated(_copy(weights, fisher),
                                {name: f.detach().cpu().clone() for name, f in fisher.items()})
            return EwcState(self.mode, self.decay, [*self.entries, pair], history)
        old = self.entries[0].fisher
        merged = {name: self.decay * old.get(name, 0.0) + fisher.get(name, 0.0)
                  for name in sorted(old.keys() | fisher.keys()) if name in weights}
        return EwcState(self.mode, self.decay, [Consolidated(_copy(weights, merged), merged)], history)

    def regularisers(self, strength: float) -> list[WeightPull]:
        """One (strength/2) sum F (theta - theta*)^2 term per pair, for PlugPoints.regularisers."""
        return [WeightPull(pair.anchor, strength, pair.fisher) for pair in self.entries]


def _copy(weights: dict[str, Tensor], names: dict[str, Tensor]) -> dict[str, Tensor]:
    """A CPU copy of the weights named in `names` (the anchor theta*)."""
    return {name: weights[name].detach().cpu().clone() for name in names}


def save_state(folder: Path, state: EwcState) -> None:
    """Write ewc.safetensors and ewc.json into `folder` (each file atomically)."""
    tensors = {}
    for i, pair in enumerate(state.entries):
        for kind, named in (("anchor", pair.anchor), ("fisher", pair.fisher)):
            tensors.update({f"{i}/{kind}/{name}": t.contiguous() for name, t in named.items()})
    atomic_write_bytes(folder / STATE_TENSORS, save(tensors))
    atomic_write_json(folder / STATE_JSON, {"convention": CONVENTION, "mode": state.mode,
                                            "decay": state.decay, "pairs": len(state.entries),
                                            "history": state.history})


def load_state(folder: Path) -> EwcState | None:
    """The EWC state an earlier round saved in model folder `folder`, or None if it has none."""
    described = folder / STATE_JSON
    if not described.is_file():
        return None
    try:
        info = json.loads(described.read_text(encoding="utf-8"))
        tensors = load_file(str(folder / STATE_TENSORS))
        mode, decay, pairs, history = info["mode"], float(info["decay"]), int(info["pairs"]), info["history"]
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as err:
        raise ArtifactError(f"{folder}: unreadable EWC state ({STATE_JSON} + {STATE_TENSORS}: "
                            f"{err})") from None
    if mode not in ("separate", "online"):
        raise ArtifactError(f"{described}: mode {mode!r} (expected separate or online)")
    entries = [Consolidated(_part(tensors, i, "anchor"), _part(tensors, i, "fisher")) for i in range(pairs)]
    return EwcState(mode, decay, entries, list(history))


def _part(tensors: dict[str, Tensor], index: int, kind: str) -> dict[str, Tensor]:
    prefix = f"{index}/{kind}/"
    return {key.removeprefix(prefix): t for key, t in tensors.items() if key.startswith(prefix)}

