"""GradNorm on a toy two-task regression whose losses differ in scale by 100x, and fixed weights."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from lmforge.model import FixedWeights, GradNorm


class TwoTaskNet(nn.Module):
    """A shared linear trunk and one linear head per task."""

    def __init__(self):
        super().__init__()
        self.trunk = nn.Linear(8, 16)
        self.heads = nn.ModuleList(nn.Linear(16, 1) for _ in range(2))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = torch.tanh(self.trunk(x))
        return [head(h).squeeze(-1) for head in self.heads]


def toy_data() -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Two targets from different directions; the second is 10x larger, so its MSE is ~100x."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=g)
    directions = torch.randn(2, 8, generator=g)
    return x, [x @ directions[0], 10.0 * (x @ directions[1])]


def task_losses(net: TwoTaskNet, x: torch.Tensor, ys: list[torch.Tensor]) -> list[torch.Tensor]:
    return [nn.functional.mse_loss(pred, y) for pred, y in zip(net(x), ys, strict=True)]


def norm_ratio(net: TwoTaskNet, balancer: GradNorm, losses: list[torch.Tensor]) -> float:
    """max/min of the weighted gradient norms ||w_i ∇_W L_i|| at the shared layer (1 = balanced)."""
    norms = [w * torch.autograd.grad(loss, net.trunk.weight, retain_graph=True)[0].norm()
             for w, loss in zip(balancer.weights, losses, strict=True)]
    return float(max(norms) / min(norms))


def train(balancer: GradNorm | FixedWeights, steps: int = 100) -> tuple[TwoTaskNet, list[float]]:
    torch.manual_seed(0)
    net = TwoTaskNet()
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-3)
    x, ys = toy_data()
    ratios = []
    for _ in range(steps):
        losses = task_losses(net, x, ys)
        if isinstance(balancer, GradNorm):
            ratios.append(norm_ratio(net, balancer, losses))
        total = balancer.weighted_loss(losses)
        measured = balancer.measure(losses, net.trunk.weight)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        balancer.step(*measured)
        assert net.trunk.weight.grad is not None
    return net, ratios


def test_gradnorm_moves_weights_toward_balanced_gradient_norms():
    balancer = GradNorm(n_tasks=2, alpha=1.5)
    _, ratios = train(balancer)
    small, large = balancer.weights
    assert small > 1.0 > large > 0.0
    assert sum(balancer.weights) == pytest.approx(2.0)
    assert ratios[-1] < ratios[0] / 2, (ratios[0], ratios[-1])


def test_weighted_loss_does_not_train_the_weights():
    balancer = GradNorm(n_tasks=2)
    net = TwoTaskNet()
    x, ys = toy_data()
    balancer.weighted_loss(task_losses(net, x, ys)).backward()
    assert balancer._w.grad is None


def test_state_dict_round_trip_resumes_the_same_weights():
    balancer = GradNorm(n_tasks=2)
    train(balancer, steps=5)
    saved = io.BytesIO()
    torch.save(balancer.state_dict(), saved)
    saved.seek(0)
    restored = GradNorm(n_tasks=2)
    restored.load_state_dict(torch.load(saved))
    net = TwoTaskNet()
    x, ys = toy_data()
    for b in (balancer, restored):
        b.step(*b.measure(task_losses(net, x, ys), net.trunk.weight))
    assert restored.weights == balancer.weights


def test_wrong_number_of_losses_is_an_error():
    net = TwoTaskNet()
    x, ys = toy_data()
    with pytest.raises(ValueError, match="expected 3 task losses"):
        GradNorm(n_tasks=3).measure(task_losses(net, x, ys), net.trunk.weight)


def test_fixed_weights_stay_fixed():
    balancer = FixedWeights([1.0, 0.5])
    train(balancer, steps=10)
    assert balancer.weights == [1.0, 0.5]
    losses = [torch.tensor(2.0), torch.tensor(4.0)]
    assert float(balancer.weighted_loss(losses)) == pytest.approx(4.0)
