"""Task-loss weights for multi-task training: GradNorm (Chen et al. 2018) or fixed weights.

Both give `weighted_loss(losses)` for the model's backward, `measure(losses, shared)` before
that backward (it reads the task losses' graph) and `step(values, norms)` after it (no-ops for
fixed weights), `weights` for logging and a state dict for checkpoints, so a training loop
treats them alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor


class GradNorm:
    """Learnable weights w_i that keep the tasks' gradient norms at the shared layer in balance.

    Each step the weighted gradient norm G_i = ||∇_W w_i L_i|| of every task is pulled towards
    mean(G) * r_i^alpha, where r_i is task i's loss ratio L_i / L_i(0) relative to the mean ratio:
    tasks that train slower get larger gradients. `alpha` sets how strongly (1.5 is the paper's
    NYUv2 setting; 0 balances the norms alone). The weights have their own Adam optimizer and are
    renormalised to sum to the number of tasks after every step, so the total learning rate of
    the model stays fixed.
    """

    def __init__(self, n_tasks: int, alpha: float = 1.5, lr: float = 0.025, min_weight: float = 1e-3):
        self.n_tasks = n_tasks
        self.alpha = alpha
        self.min_weight = min_weight
        self._w = torch.ones(n_tasks, requires_grad=True)
        self._optimizer = torch.optim.Adam([self._w], lr=lr)
        self._initial_losses = torch.full((n_tasks,), float("nan"))  # L_i(0), set by the first update

    @property
    def weights(self) -> list[float]:
        return self._w.tolist()

    def weighted_loss(self, losses: Sequence[Tensor]) -> Tensor:
        """sum_i w_i L_i with the weights detached: the model's backward must not train them.

        A copy, because `update` changes the weights in place before that backward runs.
        """
        return _weighted_sum(self._w.detach().clone(), losses)

    def measure(self, losses: Sequence[Tensor], shared: Tensor,
                reduce: Callable[[Tensor], Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """The task losses and their plain gradient norms at `shared`: GradNorm's inputs for one step.

        `reduce` adds a rank's share over the data-parallel ranks (each holds the loss and
        gradient of its own rows), so values and norms are the whole batch's, as in one process.

        Call before the model's backward (it reads the losses' graph and keeps it alive).
        ||∇_W w_i L_i|| = w_i ||∇_W L_i|| for w_i > 0, so the norms of the plain task gradients
        are taken without a graph and the weights enter in `step`: the same GradNorm gradient as
        differentiating through ∇_W, without a second-order backward through the network.
        """
        if len(losses) != self.n_tasks:
            raise ValueError(f"expected {self.n_tasks} task losses, got {len(losses)}")
        reduce = reduce or (lambda share: share)
        values = torch.stack([reduce(loss.detach().clone()).float().cpu() for loss in losses])
        grads = [reduce(torch.autograd.grad(loss, shared, retain_graph=True)[0]) for loss in losses]
        norms = torch.stack([grad.norm().float().cpu() for grad in grads])
        return values, norms

    def step(self, values: Tensor, norms: Tensor) -> float:
        """One Adam step on the weights from measured losses and norms; returns the GradNorm loss.

        As in Chen et al.'s Algorithm 1, the network's step uses w(t) and this step makes
        w(t+1), renormalised to sum to the number of tasks.
        """
        if self._initial_losses.isnan().any():
            self._initial_losses = values.clone()
        grad_norms = self._w * norms
        ratios = values / self._initial_losses
        target = (grad_norms.mean() * (ratios / ratios.mean()) ** self.alpha).detach()
        gradnorm_loss = (grad_norms - target).abs().sum()
        self._optimizer.zero_grad()
        gradnorm_loss.backward()
        self._optimizer.step()
        with torch.no_grad():
            self._w.clamp_(min=self.min_weight)
            self._w.mul_(self.n_tasks / self._w.sum())
        return float(gradnorm_loss.detach())

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self._w.detach().clone(), "initial_losses": self._initial_losses.clone(),
                "optimizer": self._optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            self._w.copy_(state["weights"])
        self._initial_losses = state["initial_losses"].clone()
        self._optimizer.load_state_dict(state["optimizer"])


class FixedWeights:
    """Constant task weights: the plain weighted sum, with GradNorm's interface."""

    def __init__(self, weights: Sequence[float]):
        self._w = torch.tensor(weights, dtype=torch.float32)

    @property
    def weights(self) -> list[float]:
        return self._w.tolist()

    def weighted_loss(self, losses: Sequence[Tensor]) -> Tensor:
        return _weighted_sum(self._w, losses)

    def measure(self, losses: Sequence[Tensor], shared: Tensor,
                reduce: Callable[[Tensor], Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """The task losses (added over ranks by `reduce`), and no gradient norms: none are needed."""
        reduce = reduce or (lambda share: share)
        return torch.stack([reduce(loss.detach().clone()).float().cpu() for loss in losses]), torch.zeros(0)

    def step(self, values: Tensor, norms: Tensor) -> float:
        """Nothing to learn."""
        return 0.0

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self._w.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._w = state["weights"].clone()


def _weighted_sum(weights: Tensor, losses: Sequence[Tensor]) -> Tensor:
    stacked = torch.stack(list(losses))
    return (weights.to(stacked.device, stacked.dtype) * stacked).sum()
