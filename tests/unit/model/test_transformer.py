"""Backbone behaviour: recurrence, causality, padding, memory, init, for every position type."""

from __future__ import annotations

import pytest
import torch

from lmforge.model import ModelConfig, Transformer

POSITIONS = ["xl", "absolute", "rotary"]


def tokens(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 50, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("position", POSITIONS)
def test_segments_with_memory_equal_one_long_forward(make_model, position):
    model = make_model(position, seq_len=8, mem_len=16)
    x = tokens(2, 24)
    with torch.no_grad():
        whole = model(x).logits
        mems, pieces = None, []
        for start in range(0, 24, 8):
            out = model(x[:, start : start + 8], mems)
            mems = out.mems
            pieces.append(out.logits)
    torch.testing.assert_close(torch.cat(pieces, dim=1), whole, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("position", POSITIONS)
def test_causal_ignores_future_and_bidirectional_does_not(make_model, position):
    model = make_model(position)
    x = tokens(1, 8)
    y = x.clone()
    y[0, 5] = (x[0, 5] + 1) % 50
    with torch.no_grad():
        before, after = model(x).logits, model(y).logits
        both_before, both_after = model(x, causal=False).logits, model(y, causal=False).logits
    torch.testing.assert_close(after[:, :5], before[:, :5], rtol=0, atol=1e-12)
    assert not torch.allclose(after[:, 5:], before[:, 5:])
    for i in range(8):
        assert not torch.allclose(both_after[:, i], both_before[:, i])


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("position", POSITIONS)
def test_pad_ids_do_not_reach_real_tokens(make_model, position, causal):
    model = make_model(position)
    real = torch.tensor([[False, True, True, False, True, True, True, False],
                         [True] * 6 + [False] * 2])
    x = tokens(2, 8)
    y = torch.where(real, x, (x + 7) % 50)
    with torch.no_grad():
        mems = model(tokens(2, 8, seed=2)).mems
        a = model(x, mems, causal=causal, padding_mask=real).hidden
        b = model(y, mems, causal=causal, padding_mask=real).hidden
    assert torch.isfinite(a).all()
    torch.testing.assert_close(a[real], b[real], rtol=0, atol=1e-12)


@pytest.mark.parametrize("position", POSITIONS)
def test_memory_is_detached_and_bounded(make_model, position):
    model = make_model(position, mem_len=5).train()
    mems = None
    for seed in range(3):
        out = model(tokens(2, 8, seed), mems)
        mems = out.mems
        assert len(mems) == 2
        for mem in mems:
            assert mem.shape == (2, 5, 32)
            assert not mem.requires_grad and mem.grad_fn is None
    out.logits.sum().backward()  # would fail or reach old graphs if memory were attached

    assert len(model(tokens(2, 8), mem_len=3).mems[0][0]) == 3
    assert model(tokens(2, 8), mem_len=0).mems == []


def test_memory_grows_to_mem_len_across_short_segments(make_model):
    model = make_model("xl", mem_len=12)
    out = model(tokens(1, 8))
    assert out.mems[0].size(1) == 8
    out = model(tokens(1, 8), out.mems)
    assert out.mems[0].size(1) == 12


def test_absolute_positions_refuse_beyond_their_table(make_model):
    model = make_model("absolute", seq_len=8, mem_len=8)
    with pytest.raises(ValueError, match="absolute positions reach 16"):
        model(tokens(1, 17))


def test_lm_head_is_tied_and_init_is_gpt2_like():
    model = Transformer(ModelConfig(d_model=256, n_layers=8, n_heads=4, d_ff=1024))
    out = model(tokens(1, 4))
    assert out.logits.shape == (1, 4, 8192)
    torch.testing.assert_close(out.logits, out.hidden @ model.tok_emb.weight.T)
    block = model.blocks[0]
    assert block.attn.wq.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert block.attn.wo.weight.std().item() == pytest.approx(0.02 / 4, rel=0.05)
    assert block.mlp.w_out.weight.std().item() == pytest.approx(0.02 / 4, rel=0.05)
    assert block.attn.core.u.abs().sum() == 0


def test_meta_model_materialises_with_init_weights():
    with torch.device("meta"):
        model = Transformer(ModelConfig())
    model.to_empty(device="cpu")
    model.init_weights()
    assert torch.isfinite(model(tokens(1, 8)).logits).all()


def test_num_parameters_excludes_token_and_position_tables():
    for position in POSITIONS:
        model = Transformer(ModelConfig(position=position))
        tables = model.tok_emb.weight.numel() + (model.pos_emb.weight.numel() if model.pos_emb else 0)
        assert model.num_parameters() - model.num_parameters(exclude_embeddings=True) == tables


@pytest.mark.parametrize("position", POSITIONS)
def test_bf16_autocast_trains(position):
    model = Transformer(ModelConfig(position=position, seq_len=8, mem_len=8))
    x = tokens(2, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mems = model(x).mems
        out = model(x, mems, padding_mask=torch.ones(2, 8, dtype=torch.bool))
    out.logits.float().logsumexp(-1).mean().backward()
    assert out.logits.dtype == torch.bfloat16
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
