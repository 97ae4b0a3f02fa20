"""Task heads, the multi-task wrapper on a tiny backbone, and the heads.json round trip."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lmforge.model import (
    ContrastiveEmbeddingHead,
    GradNorm,
    ModelConfig,
    MultiTaskModel,
    SequenceClassificationHead,
    TokenClassificationHead,
    Transformer,
    build_heads,
    heads_spec,
    shared_layer,
)
from lmforge.model.heads import pool

D = 32
LABELS = {"sentiment": ["neg", "pos"], "tags": ["O", "B-PER", "I-PER"]}


def tiny_model(causal: bool = False) -> MultiTaskModel:
    torch.manual_seed(0)
    backbone = Transformer(ModelConfig(preset="tiny", d_model=D, n_heads=2, d_ff=64, vocab_size=100,
                                       dropout=0.0))
    heads = nn.ModuleDict({"sentiment": SequenceClassificationHead(D, 2),
                           "tags": TokenClassificationHead(D, 3),
                           "sentences": ContrastiveEmbeddingHead(D, 16)})
    return MultiTaskModel(backbone, heads, causal=causal).eval()


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Two sequences of 6 tokens; the second has 2 pads at the end."""
    idx = torch.randint(1, 100, (2, 6), generator=torch.Generator().manual_seed(1))
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    return idx, mask


@pytest.mark.parametrize("pooling", ["mean", "last", "cls"])
def test_classification_shape_and_pads_change_nothing(pooling):
    head = SequenceClassificationHead(D, 5, pooling=pooling).eval()
    hidden, mask = torch.randn(2, 6, D), torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    changed = hidden.clone()
    changed[1, 4:] = torch.randn(2, D)
    logits = head(hidden, mask)
    assert logits.shape == (2, 5)
    torch.testing.assert_close(head(changed, mask), logits)


def test_mean_and_last_pooling_pick_the_real_tokens():
    hidden, mask = torch.randn(1, 6, D), torch.tensor([[True] * 4 + [False] * 2])
    torch.testing.assert_close(pool(hidden, mask, "mean")[0], hidden[0, :4].mean(0))
    torch.testing.assert_close(pool(hidden, mask, "last")[0], hidden[0, 3])
    torch.testing.assert_close(pool(hidden, mask, "cls")[0], hidden[0, 0])


def test_classification_pooling_ignores_pad_ids_through_the_backbone():
    model = tiny_model()
    idx, mask = batch()
    other = idx.clone()
    other[1, 4:] = 7
    with torch.no_grad():
        torch.testing.assert_close(model("sentiment", other, mask)[1],
                                   model("sentiment", idx, mask)[1])


def test_token_classification_loss_ignores_minus_100():
    head = TokenClassificationHead(D, 3)
    logits = head(torch.randn(2, 6, D), None)
    assert logits.shape == (2, 6, 3)
    labels = torch.tensor([[0, 1, -100, 2, 0, 0], [1, -100, 0, 0, -100, -100]])
    kept = labels != -100
    expected = F.cross_entropy(logits[kept], labels[kept])
    torch.testing.assert_close(head.loss(logits, labels), expected)
    logits_at_ignored = logits.detach().clone()
    logits_at_ignored[~kept] = 100.0
    torch.testing.assert_close(head.loss(logits_at_ignored, labels), expected.detach())


def test_embeddings_are_unit_norm_and_simcse_prefers_matching_views():
    head = ContrastiveEmbeddingHead(D, 16)
    z = head(torch.randn(8, 5, D), None)
    assert z.shape == (8, 16)
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(8))
    view = F.normalize(z + 0.01 * torch.randn_like(z), dim=-1)
    shuffled = view[torch.randperm(8, generator=torch.Generator().manual_seed(0))]
    assert head.loss(z, view) < head.loss(z, shuffled)


def test_heads_spec_round_trips_through_json():
    model = tiny_model()
    spec = json.loads(json.dumps({"lm": {"task": "causal_lm"}, **heads_spec(model.heads, LABELS)}))
    assert spec["sentiment"] == {"task": "classify", "n_labels": 2, "pooling": "mean", "dropout": 0.1,
                                 "labels": ["neg", "pos"]}
    assert spec["sentences"] == {"task": "embed", "dim": 16, "temperature": 0.05}
    rebuilt = build_heads(spec, D)
    assert list(rebuilt) == ["sentiment", "tags", "sentences"]
    original = {k: v.shape for k, v in model.heads.state_dict().items()}
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == original


def test_heads_spec_needs_one_name_per_label():
    with pytest.raises(ValueError, match="'sentiment' has 2 labels but 1 names"):
        heads_spec(tiny_model().heads, {"sentiment": ["neg"], "tags": LABELS["tags"]})


@pytest.mark.parametrize("causal", [False, True])
def test_forward_task_gives_a_finite_loss_for_every_task(causal):
    model = tiny_model(causal).train()
    idx, mask = batch()
    token_labels = torch.where(mask, idx, -100)
    cases = {
        "causal_lm": ({"labels": token_labels}, (2, 6, 100)),
        "masked_lm": ({"labels": token_labels}, (2, 6, 100)),
        "sentiment": ({"labels": torch.tensor([0, 1])}, (2, 2)),
        "tags": ({"labels": torch.where(mask, 1, -100)}, (2, 6, 3)),
        "sentences": ({"positive": idx, "positive_mask": mask}, (2, 16)),
    }
    for task, (targets, shape) in cases.items():
        loss, outputs = model(task, idx, mask, **targets)
        assert outputs.shape == shape, task
        assert loss is not None and torch.isfinite(loss), task
        loss.backward()
        assert shared_layer(model.backbone).grad is not None


def test_forward_task_without_targets_returns_no_loss():
    model = tiny_model()
    idx, mask = batch()
    loss, z = model("sentences", idx, mask)
    assert loss is None
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(2))


def test_bidirectional_encoder_sees_later_tokens_and_causal_does_not():
    idx, mask = batch()
    later = idx.clone()
    later[0, 5] = (idx[0, 5] + 1) % 100
    for causal in (False, True):
        model = tiny_model(causal)
        with torch.no_grad():
            first = model.encode(idx, mask)[0, 0], model.encode(later, mask)[0, 0]
        assert torch.allclose(*first) == causal


def test_gradnorm_steps_on_the_backbones_shared_layer():
    model = tiny_model().train()
    idx, mask = batch()
    balancer = GradNorm(n_tasks=2)
    losses = [model("masked_lm", idx, mask, labels=torch.where(mask, idx, -100))[0],
              model("sentiment", idx, mask, labels=torch.tensor([0, 1]))[0]]
    total = balancer.weighted_loss(losses)
    measured = balancer.measure(losses, shared_layer(model.backbone))
    total.backward()
    balancer.step(*measured)
    assert balancer.weights != [1.0, 1.0]
    assert sum(balancer.weights) == pytest.approx(2.0)
