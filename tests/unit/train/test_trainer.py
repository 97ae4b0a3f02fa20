"""The trainer's plug points, each against an independent computation, dropout on.

- regulariser: gradients = whole-batch mean cross-entropy (torch.nn.functional) + the pull
  (lambda/2) * ||theta - theta*||^2, under accumulation;
- teacher: a frozen model's logits reach the loss (a KL term written out here), the teacher
  gets no gradient and does not move;
- module transform: a pruning mask applied before the engine wraps the model stays zero;
- step callback: runs after every step, and its state comes back on resume, where the run
  continues bit-identically.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils import parametrize

from lmforge.model import ModelConfig, Transformer
from lmforge.parallel import Layout
from lmforge.train.config import OptimSettings
from lmforge.train.engine import Engine
from lmforge.train.objectives import LanguageModelling, Objective, summed_loss
from lmforge.train.regularisers import WeightPull
from lmforge.train.trainer import Monitor, PlugPoints, Trainer, apply_transforms

VOCAB, BATCH, T, STEPS = 40, 4, 8, 6


def model(seed: int = 0, dtype: torch.dtype = torch.float64, dropout: float = 0.1) -> Transformer:
    torch.manual_seed(seed)
    config = ModelConfig(vocab_size=VOCAB, d_model=16, n_layers=2, n_heads=2, d_ff=32, seq_len=T, mem_len=0,
                         dropout=dropout)
    return Transformer(config).to(dtype).train()


class Stream:
    """Batch `step` of a fixed random token stream (a stand-in for packed segments)."""

    def __init__(self, steps: int = STEPS):
        generator = torch.Generator().manual_seed(1)
        self.tokens = torch.randint(0, VOCAB, (steps, BATCH, T + 1), generator=generator)

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self.tokens[step % len(self.tokens)]
        return rows[:, :-1], rows[:, 1:]


def causal_lm() -> LanguageModelling:
    return LanguageModelling(Objective(kind="causal"), Stream())


class Distilled(LanguageModelling):
    """Cross-entropy plus, per target token, KL(teacher || student) of the next-token distributions."""

    def loss(self, module, rows, carry, teacher=None):
        inputs, labels = rows
        out = module(inputs, None, causal=True)
        kl = F.kl_div(F.log_softmax(out.logits, -1), F.log_softmax(teacher, -1), log_target=True,
                      reduction="sum")
        return summed_loss(out.logits, labels) + kl, out.mems


def perturbed_reference(net: Transformer) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(5)
    return {n: p.detach() + 0.1 * torch.randn(p.shape, generator=generator, dtype=p.dtype)
            for n, p in net.named_parameters()}


@pytest.mark.parametrize("micro", [BATCH, 2, 1])
def test_regulariser_adds_the_pull_to_the_whole_batch_gradient(micro):
    net = model()
    reference = perturbed_reference(net)
    strength = 0.3
    lm = causal_lm()
    inputs, labels = lm.batch(0)

    torch.manual_seed(7)
    logits = torch.cat([net(inputs[s:s + micro], None, causal=True).logits for s in range(0, BATCH, micro)])
    pull = sum(((p - reference[n]) ** 2).sum() for n, p in net.named_parameters())
    (F.cross_entropy(logits.flatten(0, 1), labels.flatten()) + strength / 2 * pull).backward()
    want = {n: p.grad.clone() for n, p in net.named_parameters()}
    net.zero_grad(set_to_none=True)

    torch.manual_seed(7)
    engine = Engine(net, Layout.single(), BATCH, micro, bf16=False)
    _, _, penalty = engine.forward_backward(lm, (inputs, labels), None, WeightPull(reference, strength))
    assert penalty == pytest.approx(float(strength / 2 * pull.detach()), rel=1e-12)
    for name, p in net.named_parameters():
        torch.testing.assert_close(p.grad, want[name], rtol=1e-9, atol=1e-12, msg=name)


def test_teacher_logits_reach_the_loss_and_the_teacher_stays_frozen(tmp_path):
    student, teacher = model(0), model(1).eval()
    frozen = {n: p.detach().clone() for n, p in teacher.named_parameters()}
    teacher.requires_grad_(False)
    lm = Distilled(Objective(kind="causal"), Stream())
    inputs, labels = lm.batch(0)

    def teach(rows):
        with torch.no_grad():
            return teacher(rows[0], None, causal=True).logits

    torch.manual_seed(3)
    out = student(inputs, None, causal=True).logits
    target = F.softmax(teach((inputs,)), -1)
    kl = (target * (target.log() - F.log_softmax(out, -1))).sum()
    ((F.cross_entropy(out.flatten(0, 1), labels.flatten(), reduction="sum") + kl) / labels.numel()).backward()
    want = {n: p.grad.clone() for n, p in student.named_parameters()}
    student.zero_grad(set_to_none=True)

    torch.manual_seed(3)
    Engine(student, Layout.single(), BATCH, BATCH, bf16=False).forward_backward(lm, (inputs, labels), None,
                                                                                 teacher=teach)
    for name, p in student.named_parameters():
        torch.testing.assert_close(p.grad, want[name], rtol=1e-9, atol=1e-12, msg=name)

    trainer = make_trainer(student, lm, tmp_path, PlugPoints(teacher=teach))
    trainer.fit(resume=None)
    assert all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(p, frozen[n]) for n, p in teacher.named_parameters())


class Mask(torch.nn.Module):
    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask


def prune_half(net: torch.nn.Module) -> torch.nn.Module:
    """A module transform as pruning will use: a fixed mask on every MLP input matrix."""
    for block in net.blocks:
        weight = block.mlp.w_in.weight
        parametrize.register_parametrization(block.mlp.w_in, "weight", Mask(torch.rand(weight.shape) < 0.5))
    return net


def test_module_transform_is_applied_before_training_and_masked_weights_stay_zero(tmp_path):
    net = apply_transforms(model(dtype=torch.float32), [prune_half])
    before = [block.mlp.w_in.weight.detach().clone() for block in net.blocks]
    trainer = make_trainer(net, causal_lm(), tmp_path)
    trainer.fit(resume=None)
    for block, old in zip(net.blocks, before, strict=True):
        mask = block.mlp.w_in.parametrizations.weight[0].mask
        assert torch.all(block.mlp.w_in.weight[~mask] == 0)
        assert not torch.equal(block.mlp.w_in.weight[mask], old[mask])


class CountingCallback:
    """Counts steps; crashes once at `crash_at` (a stand-in for a killed run)."""

    name = "counter"

    def __init__(self, crash_at: int | None = None):
        self.count, self.crash_at, self.seen = 0, crash_at, []

    def after_step(self, step, record, engine):
        if step == self.crash_at:
            self.crash_at = None
            raise KeyboardInterrupt
        self.count += 1
        self.seen.append(step)
        return {"count": self.count}

    def state_dict(self):
        return {"count": torch.tensor(self.count)}

    def load_state_dict(self, state):
        self.count = int(state["count"])


def make_trainer(net, objective, root: Path, plugs: PlugPoints | None = None) -> Trainer:
    engine = Engine(net, Layout.single(), BATCH, BATCH, bf16=False)
    batch = Stream().batch(0)
    monitor = Monitor(lambda: {"loss": float(summed_loss(net(batch[0], None, causal=True).logits, batch[1]))})
    options = OptimSettings(steps=STEPS, batch_size=BATCH, eval_every=2, checkpoint_every=2, log_every=1)
    return Trainer(engine, objective, options, monitor, root, {"test": 1}, "test", plugs)


def test_callback_state_is_checkpointed_and_a_resumed_run_is_bit_identical(tmp_path):
    whole = model(dtype=torch.float32)
    counter = CountingCallback()
    make_trainer(whole, causal_lm(), tmp_path / "whole", PlugPoints(callbacks=[counter])).fit(resume=None)
    assert counter.seen == list(range(1, STEPS + 1))

    crashed = CountingCallback(crash_at=3)
    with pytest.raises(KeyboardInterrupt):
        make_trainer(model(dtype=torch.float32), causal_lm(), tmp_path / "cut",
                     PlugPoints(callbacks=[crashed])).fit(resume=None)
    resumed = CountingCallback()
    net = model(seed=9, dtype=torch.float32)  # other initial weights: all must come from the checkpoint
    make_trainer(net, causal_lm(), tmp_path / "cut", PlugPoints(callbacks=[resumed])).fit(resume="auto")
    assert resumed.seen == [3, 4, 5, 6] and resumed.count == STEPS
    for (name, a), b in zip(whole.named_parameters(), net.parameters(), strict=True):
        assert torch.equal(a, b), name


def test_compiled_module_follows_the_eager_trajectory(tmp_path):
    """train.compile: torch.compile of the module as the engine runs it; the same losses as eager
    (dropout off: compiled dropout draws its masks from another generator)."""
    losses = {}
    for compiled in (False, True):
        net = model(dtype=torch.float32, dropout=0.0)
        engine = Engine(net, Layout.single(), BATCH, BATCH, bf16=False)
        if compiled:
            engine.compile()
        trainer = Trainer(engine, causal_lm(), OptimSettings(steps=4, batch_size=BATCH), None, None, {}, "t")
        losses[compiled] = [r["loss"] for r in trainer.fit(resume=None).history]
    assert losses[True] == pytest.approx(losses[False], abs=1e-5)


def test_the_trainer_adds_its_regularisers_to_every_step(tmp_path):
    """A strong pull to the initial weights keeps a run near them; the penalty is logged per step."""
    moved = {}
    for strength in (0.0, 1e3):
        net = model(dtype=torch.float32)
        start = {n: p.detach().clone() for n, p in net.named_parameters()}
        plugs = PlugPoints(regularisers=[WeightPull.to_current(net, strength)])
        history = make_trainer(net, causal_lm(), tmp_path / str(strength), plugs).fit(resume=None).history
        assert len(history) == STEPS and all("penalty" in record for record in history)
        moved[strength] = sum(float((p - start[n]).norm()) for n, p in net.named_parameters())
    assert moved[1e3] < moved[0.0] / 3


class Scripted:
    """A monitor's evaluation that returns the given dev scores in turn (higher is better)."""

    def __init__(self, scores: list[float]):
        self.scores = iter(scores)

    def __call__(self) -> dict[str, float]:
        return {"accuracy": next(self.scores)}


class WeightsAt:
    """Step callback that keeps a copy of the weights after every step."""

    name = "weights"

    def __init__(self, net):
        self.net, self.after = net, {}

    def after_step(self, step, record, engine):
        self.after[step] = {n: p.detach().clone() for n, p in self.net.named_parameters()}
        return {}

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def test_early_stopping_keeps_the_best_weights_of_a_higher_is_better_metric(tmp_path):
    """Dev accuracy 0.1 (start), 0.5, 0.9, 0.7, 0.6 at steps 2, 4, 6, 8; patience 2: the run stops at
    step 8 and ends with the weights of step 4, the best."""
    net = model(dtype=torch.float32)
    engine = Engine(net, Layout.single(), BATCH, BATCH, bf16=False)
    monitor = Monitor(Scripted([0.1, 0.5, 0.9, 0.7, 0.6, 0.9]), metric="accuracy", higher_is_better=True,
                      on_plateau="stop", patience=2, keep_best=True)
    weights = WeightsAt(net)
    options = OptimSettings(steps=20, batch_size=BATCH, eval_every=2, checkpoint_every=2)
    result = Trainer(engine, causal_lm(), options, monitor, tmp_path, {"test": 1}, "test",
                     PlugPoints(callbacks=[weights])).fit(resume=None)
    assert (result.steps, result.best_step, result.stopped_early) == (8, 4, True)
    for name, p in net.named_parameters():
        assert torch.equal(p, weights.after[4][name]), name


def test_a_run_that_stopped_early_stays_stopped_when_resumed(tmp_path):
    """Killed after its last checkpoint (the stop), before its model folder was written: resuming must
    not train on past the early stop."""
    def run(resume):
        net = model(dtype=torch.float32)
        monitor = Monitor(Scripted([0.1, 0.5, 0.9, 0.7, 0.6, 0.9, 0.9, 0.9]), metric="accuracy",
                          higher_is_better=True, on_plateau="stop", patience=2, keep_best=True)
        options = OptimSettings(steps=20, batch_size=BATCH, eval_every=2, checkpoint_every=2)
        engine = Engine(net, Layout.single(), BATCH, BATCH, bf16=False)
        trainer = Trainer(engine, causal_lm(), options, monitor, tmp_path, {"test": 1}, "test")
        return trainer.fit(resume=resume)

    assert run(None).steps == 8
    again = run("auto")
    assert (again.steps, again.stopped_early, again.history) == (8, True, [])


def test_callback_state_survives_the_json_and_safetensors_round_trip_of_a_checkpoint(tmp_path):
    """Tensors keep values and dtype, integer keys come back as int, lists and nesting stay."""
    import json

    from safetensors.torch import load_file, save_file

    from lmforge.train.checkpoint import decode_state, encode_state

    state = {"step": 3, "weights": torch.tensor([1.5, -2.0], dtype=torch.float64),
             "counts": torch.tensor([[1, 2]], dtype=torch.int64), "history": [0.5, torch.tensor(2.0)],
             "by_task": {0: {"name": "sst2"}, "11": [1, 2]}}
    tensors: dict[str, torch.Tensor] = {}
    text = json.dumps(encode_state(state, tensors))
    save_file(tensors, str(tmp_path / "callbacks.safetensors"))
    assert "-2.0" not in text and len(tensors) == 3
    back = decode_state(json.loads(text), load_file(str(tmp_path / "callbacks.safetensors")))
    assert back["step"] == 3 and back["by_task"] == {0: {"name": "sst2"}, 11: [1, 2]}
    assert back["weights"].dtype == torch.float64 and torch.equal(back["weights"], state["weights"])
    assert back["counts"].dtype == torch.int64 and torch.equal(back["counts"], state["counts"])
    assert back["history"][0] == 0.5 and torch.equal(back["history"][1], torch.tensor(2.0))


@pytest.mark.parametrize("bf16", [False, True])
def test_the_precision_setting_decides_whether_the_step_runs_in_bf16(bf16):
    """fp32 (the default) gives the float32 loss of an independent forward pass to 1e-6; bf16 autocast
    moves it by far more, so an fp32 run that silently ran in bf16 would show here."""
    net = model(dtype=torch.float32, dropout=0.0)
    lm = causal_lm()
    inputs, labels = lm.batch(0)
    with torch.no_grad():
        logits = net(inputs, None, causal=True).logits
    reference = float(F.cross_entropy(logits.flatten(0, 1), labels.flatten()))
    engine = Engine(net, Layout.single(), BATCH, BATCH, bf16=bf16)
    loss, _, _ = engine.forward_backward(lm, lm.batch(0), None)
    assert (abs(loss - reference) < 1e-6) != bf16
