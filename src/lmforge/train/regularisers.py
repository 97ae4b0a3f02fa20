"""Regularisers for the trainer's regulariser plug point: loss terms computed from the weights.

`WeightPull` is the quadratic pull towards reference weights that an L2-SP fine-tune (F = 1)
and elastic weight consolidation (F = the diagonal Fisher of the old task) share:

    penalty = (strength / 2) * sum_i F_i * (theta_i - theta*_i)^2

the convention of Kirkpatrick et al. (2017) with the 1/2, so that `strength` is their lambda
and the penalty's gradient is strength * F * (theta - theta*).

`L1Penalty` is the sparsity penalty that pruning's fine-tuning adds (strength * sum |w|). It is
not L1 magnitude pruning: it only pushes weights towards zero; pruning removes them afterwards.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.distributed.tensor import DTensor, distribute_tensor


class WeightPull:
    """(strength/2) * sum F (theta - reference)^2 over the named parameters in `reference`."""

    def __init__(self, reference: dict[str, Tensor], strength: float,
                 importance: dict[str, Tensor] | None = None):
        self.reference = {name: t.detach().clone() for name, t in reference.items()}
        self.importance = importance
        self.strength = strength
        self._placed: dict[str, tuple[Tensor, Tensor | None]] = {}

    @classmethod
    def to_current(cls, module: nn.Module, strength: float) -> WeightPull:
        """An L2 pull towards `module`'s weights as they are now (e.g. the pretrained ones)."""
        return cls({name: p for name, p in module.named_parameters() if p.requires_grad}, strength)

    def _on(self, name: str, param: Tensor) -> tuple[Tensor, Tensor | None]:
        """The reference (and importance) of `name`, on the parameter's device and sharding."""
        if name not in self._placed:
            def place(t: Tensor) -> Tensor:
                t = t.to(param.device, param.dtype)
                if isinstance(param, DTensor):
                    return distribute_tensor(t, param.device_mesh, param.placements)
                return t

            weight = None if self.importance is None else place(self.importance[name])
            self._placed[name] = place(self.reference[name]), weight
        return self._placed[name]

    def __call__(self, module: nn.Module) -> Tensor:
        terms = []
        for name, param in module.named_parameters():
            if name not in self.reference:
                continue
            reference, weight = self._on(name, param)
            square = (param - reference).pow(2)
            term = (square if weight is None else square * weight).sum()
            terms.append(term.full_tensor() if isinstance(term, DTensor) else term)
        return 0.5 * self.strength * torch.stack(terms).sum()


class L1Penalty:
    """strength * sum |w| over the parameters whose name `select` accepts: the sparsity-inducing
    penalty that precedes magnitude pruning: its gradient strength * sign(w) pulls every selected
    weight towards zero equally hard whatever its size, so weights the loss does not need reach it
    (where an L2 pull fades as they shrink) and removing them afterwards costs less.

    Names are the unwrapped module's (`backbone.blocks.0.attn.wq.weight` under a task model), so
    select by suffix to cover both a bare backbone and a task model.
    """

    def __init__(self, strength: float, select: Callable[[str], bool]):
        self.strength = strength
        self.select = select

    def __call__(self, module: nn.Module) -> Tensor:
        terms = []
        for name, param in module.named_parameters():
            if self.select(name):
                term = param.abs().sum()
                terms.append(term.full_tensor() if isinstance(term, DTensor) else term)
        return self.strength * torch.stack(terms).sum()
