"""Pruning against independent references.

- removing heads (XL positions, with memory) or MLP neurons gives exactly the outputs and memory
  of the unpruned model with those units' outputs zeroed by a hook;
- the importance measured through hooks equals |dL/d gate| of an explicit gate on each unit;
- the L1 regulariser's gradient is lambda * sign(w) on the selected weights only;
- `prune` end to end: the folder reloads with fewer parameters and a smaller file (structured),
  or holds the asked share of exact zeros and no pruning masks (unstructured);
- bad input: one line, status 1, nothing written.
"""

from __future__ import annotations

import json

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file
from typer.testing import CliRunner

from lmforge.artifacts import read_manifest
from lmforge.cli import app
from lmforge.compress.prune import (
    keep_plan,
    prune,
    selects,
    shrink,
    unit_importance,
    units_to_remove,
    zero_share,
)
from lmforge.compress.prune_config import PruneConfig
from lmforge.config import ConfigError
from lmforge.model import ModelConfig, Transformer
from lmforge.model.bundle import load_bundle
from lmforge.train.objectives import LanguageModelling, Objective
from lmforge.train.regularisers import L1Penalty

HEADS, HEAD_DIM, D_FF, T = 4, 4, 12, 5
REMOVED = {"heads": [[1, 3], [0]], "ffn": [[0, 5, 6, 11], [2]]}
"""Units removed per layer in the reference tests."""


def model(position: str = "xl") -> Transformer:
    torch.manual_seed(0)
    config = ModelConfig(
        vocab_size=30,
        d_model=HEADS * HEAD_DIM,
        n_layers=2,
        n_heads=HEADS,
        d_ff=D_FF,
        seq_len=T,
        mem_len=2 * T,
        dropout=0.0,
        position=position,
    )
    net = Transformer(config).double().eval()
    with torch.no_grad():  # init leaves u, v at 0: give the per-head position biases something to slice
        for block in net.blocks:
            for p in block.attn.core.parameters():
                p.add_(0.1 * torch.randn_like(p))
    return net


def kept(mode: str, units: int) -> list[list[int]]:
    return [[j for j in range(units) if j not in gone] for gone in REMOVED[mode]]


def zero_units(net: Transformer, mode: str) -> list:
    """Hooks zeroing the removed units' outputs (the input columns of W_o / the MLP's output matrix)."""
    handles = []
    for block, gone in zip(net.blocks, REMOVED[mode], strict=True):
        layer, width = (block.attn.wo, HEAD_DIM) if mode == "heads" else (block.mlp.w_out, 1)
        mask = torch.ones(layer.in_features, dtype=torch.float64)
        for unit in gone:
            mask[unit * width : (unit + 1) * width] = 0

        def hook(_, args, mask=mask):
            return (args[0] * mask,)

        handles.append(layer.register_forward_pre_hook(hook))
    return handles


def two_segments(net: Transformer, causal: bool = True) -> list[torch.Tensor]:
    idx = torch.randint(0, 30, (2, 2 * T), generator=torch.Generator().manual_seed(1))
    first = net(idx[:, :T], causal=causal)
    second = net(idx[:, T:], first.mems, causal=causal)
    return [first.logits, second.logits, *second.mems]


@pytest.mark.parametrize(
    ("mode", "position", "causal"),
    [("heads", "xl", True), ("heads", "xl", False), ("heads", "rotary", True), ("ffn", "xl", True)],
)
def test_removed_units_equal_zeroed_units_with_memory(mode, position, causal):
    net = model(position)
    pruned = shrink(net, mode, kept(mode, HEADS if mode == "heads" else D_FF))
    handles = zero_units(net, mode)
    with torch.no_grad():
        want = two_segments(net, causal)
        for handle in handles:
            handle.remove()
        got = two_segments(pruned, causal)
        unpruned = two_segments(net, causal)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(unpruned[1], want[1])  # the removed units did matter
    field = pruned.config.layer_heads if mode == "heads" else pruned.config.layer_d_ff
    assert field == [len(units) for units in kept(mode, HEADS if mode == "heads" else D_FF)]
    assert pruned.num_parameters() < net.num_parameters()


def test_hooked_importance_equals_the_gradient_of_an_explicit_gate():
    """Michel et al.'s |dL/d xi_h|: gates xi = 1 multiply each head's output; autograd gives dL/d xi."""
    net = model().train()
    stream = Stream()
    lm = LanguageModelling(Objective(kind="causal"), stream)
    got = unit_importance(net, net.blocks, lm, 3, "heads", HEAD_DIM)

    gates = [torch.ones(HEADS, dtype=torch.float64, requires_grad=True) for _ in net.blocks]
    for block, gate in zip(net.blocks, gates, strict=True):
        block.attn.wo.register_forward_pre_hook(
            lambda _, args, g=gate: (args[0] * g.repeat_interleave(HEAD_DIM),)
        )
    want = [torch.zeros(HEADS, dtype=torch.float64) for _ in gates]
    mems = None
    for step in range(3):
        x, y = lm.batch(step)
        out = net(x, mems)
        mems = out.mems
        loss = torch.nn.functional.cross_entropy(out.logits.flatten(0, 1), y.flatten())
        grads = torch.autograd.grad(loss, gates)
        for total, grad in zip(want, grads, strict=True):
            total += grad.abs()
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b / b.norm())


class Stream:
    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows = torch.randint(0, 30, (3, T + 1), generator=torch.Generator().manual_seed(step))
        return rows[:, :-1], rows[:, 1:]


def test_the_global_ranking_keeps_every_layers_best_unit_and_refuses_to_empty_a_layer():
    scores = [torch.tensor([0.1, 0.2]), torch.tensor([0.9, 0.8])]
    assert keep_plan(scores, 1) == [[1], [0, 1]]
    assert keep_plan(scores, 2) == [[1], [0]]  # 0.8 goes before layer 0's last head
    config = ModelConfig(d_model=16, n_layers=2, n_heads=2)
    assert units_to_remove(config, "heads", 0.5) == 2
    with pytest.raises(ConfigError, match="leave a layer with none; every layer keeps one, so at most 2"):
        units_to_remove(config, "heads", 0.7)


def test_per_layer_widths_are_one_value_of_at_least_one_per_layer():
    assert ModelConfig(n_layers=2, layer_heads=[1, 4], layer_d_ff=[3, 512]).d_ff_at(0) == 3
    for bad in ({"layer_heads": [2]}, {"layer_heads": [2, 0]}, {"layer_d_ff": [1, 2, 3]}):
        with pytest.raises(ValidationError, match="needs one value >= 1 per layer"):
            ModelConfig(n_layers=2, **bad)


def test_l1_gradient_is_lambda_times_sign_on_the_selected_weights_only():
    net = model()
    penalty = L1Penalty(0.3, selects("ffn"))
    value = penalty(net)
    value.backward()
    chosen = 0.0
    for name, p in net.named_parameters():
        if name.endswith(("mlp.w_in.weight", "mlp.w_out.weight")):
            torch.testing.assert_close(p.grad, 0.3 * torch.sign(p.detach()), msg=name)
            chosen += float(p.detach().abs().sum())
        else:
            assert p.grad is None, name
    assert value.item() == pytest.approx(0.3 * chosen)


def test_head_pruning_of_a_classifier_writes_a_smaller_folder_that_reloads(classifier_folder, tmp_path):
    source = classifier_folder["model"]
    cfg = PruneConfig(
        model=source,
        mode="heads",
        sparsity=0.5,
        steps=3,
        batch_size=8,
        importance_batches=2,
        l1=1e-3,
        out=tmp_path / "pruned",
    )
    metrics = prune(cfg).metrics
    bundle = load_bundle(tmp_path / "pruned")
    assert sum(bundle.config.layer_heads) == 2 and min(bundle.config.layer_heads) == 1
    assert bundle.model.num_parameters() == metrics["parameters"]["after"] < metrics["parameters"]["before"]
    assert (tmp_path / "pruned/model.safetensors").stat().st_size == metrics["size_bytes"]["after"]
    assert metrics["size_bytes"]["after"] < (source / "model.safetensors").stat().st_size
    assert set(metrics["dev"]) == {"before", "after_l1", "after"} and "accuracy" in metrics["dev"]["after"]
    assert json.loads((tmp_path / "pruned/metrics.json").read_text()) == metrics
    manifest = read_manifest(tmp_path / "pruned")
    assert [p["path"] for p in manifest["parents"]] == [str(source.resolve())]
    used = manifest["config"]
    assert (used["mode"], used["sparsity"], used["l1"]) == ("heads", 0.5, 1e-3)
    assert "Michel" in used["importance"] and used["data"]["train"] == str(classifier_folder["train"])
    assert bundle.spec == load_bundle(source).spec


def test_unstructured_pruning_of_an_lm_reaches_the_sparsity_with_masks_folded_in(lm_folder, tmp_path):
    cfg = PruneConfig(
        model=lm_folder,
        mode="unstructured",
        sparsity=0.4,
        steps=2,
        batch_size=4,
        eval_segments=2,
        out=tmp_path / "sparse",
    )
    metrics = prune(cfg).metrics
    bundle = load_bundle(tmp_path / "sparse")
    weights = [p for n, p in bundle.model.named_parameters() if selects("unstructured")(n)]
    total = sum(w.numel() for w in weights)
    assert zero_share(bundle.model, "unstructured") == pytest.approx(round(0.4 * total) / total, abs=1e-9)
    assert metrics["sparsity"] == pytest.approx(0.4, abs=1 / total)
    assert bundle.model.tok_emb.weight.count_nonzero() == bundle.model.tok_emb.weight.numel()
    assert not [k for k in load_file(tmp_path / "sparse/model.safetensors") if k.endswith(("_orig", "_mask"))]
    assert metrics["metric"] == "loss" and metrics["dev"]["after"]["loss"] > 0


def test_ffn_pruning_of_an_lm_through_the_cli(lm_folder, tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "prune",
            str(lm_folder),
            "--mode",
            "ffn",
            "--sparsity",
            "0.25",
            "--steps",
            "2",
            "--out",
            str(tmp_path / "narrow"),
            "--set",
            "batch_size=4",
            "--set",
            "eval_segments=2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "dev loss:" in result.output and "model folder:" in result.output
    config = load_bundle(tmp_path / "narrow").config
    assert sum(config.layer_d_ff) == round(0.75 * config.n_layers * config.d_ff)


BAD = {
    "sparsity 0": (["--mode", "heads", "--sparsity", "0"], "sparsity: Input should be greater than 0"),
    "sparsity 1.5": (["--mode", "ffn", "--sparsity", "1.5"], "sparsity: Input should be less than 1"),
    "a layer left without heads": (["--mode", "heads", "--sparsity", "0.9"], "would leave a layer with none"),
    "unknown mode": (
        ["--mode", "rows", "--sparsity", "0.4"],
        "mode: Input should be 'unstructured', 'heads'",
    ),
    "out exists": (["--mode", "heads", "--sparsity", "0.4", "--out", "exists"], "exists: already exists"),
    "not a model folder": (["--mode", "heads", "--sparsity", "0.4"], "not a model folder"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_status_1_and_nothing_written(case, lm_folder, tmp_path, monkeypatch):
    args, message = BAD[case]
    (tmp_path / "exists").mkdir()
    (tmp_path / "folder").mkdir()
    monkeypatch.chdir(tmp_path)
    model = "folder" if case == "not a model folder" else str(lm_folder)
    out = [] if "--out" in args else ["--out", "out"]
    result = CliRunner().invoke(app, ["prune", model, *args, *out, "--set", "steps=1"])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists", "folder"]
    assert not any((tmp_path / "exists").iterdir())
