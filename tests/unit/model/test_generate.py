"""Generation: the memory cache must reproduce full re-runs; sampling options behave."""

from __future__ import annotations

import pytest
import torch

from lmforge.model import generate

PROMPT = [5, 17, 3, 42, 8]


@pytest.fixture(params=["xl", "absolute", "rotary"])
def model(request, make_model):
    model = make_model(request.param, seq_len=8, mem_len=8)
    with torch.no_grad():  # spread the logits so greedy choices are far from ties
        model.tok_emb.weight.mul_(20)
    return model


def test_cached_greedy_equals_uncached_within_the_window(model):
    n = model.config.context_len - len(PROMPT)
    cached = generate(model, PROMPT, n, temperature=0)
    assert cached == generate(model, PROMPT, n, temperature=0, use_cache=False)
    assert len(cached) == n


def test_generation_runs_past_the_window_and_restores_mode(model):
    model.train()
    assert len(generate(model, PROMPT * 4, 30, seed=0)) == 30
    assert len(generate(model, PROMPT, 30, seed=0, use_cache=False)) == 30
    assert model.training


def test_top_k_1_and_tiny_top_p_are_greedy(model):
    greedy = generate(model, PROMPT, 8, temperature=0)
    assert generate(model, PROMPT, 8, top_k=1, seed=1) == greedy
    assert generate(model, PROMPT, 8, top_p=1e-9, seed=1) == greedy


def test_seed_makes_sampling_reproducible(model):
    first = generate(model, PROMPT, 12, temperature=2.0, top_k=20, top_p=0.95, seed=7)
    assert generate(model, PROMPT, 12, temperature=2.0, top_k=20, top_p=0.95, seed=7) == first
    hot = {"temperature": 2.0}
    assert generate(model, PROMPT, 12, seed=8, **hot) != generate(model, PROMPT, 12, seed=9, **hot)


def test_stops_before_eos(model):
    greedy = generate(model, PROMPT, 8, temperature=0)
    eos = greedy[3]
    assert generate(model, PROMPT, 8, temperature=0, eos_id=eos) == greedy[: greedy.index(eos)]


def test_rejects_bad_arguments(model):
    with pytest.raises(ValueError, match="non-empty prompt"):
        generate(model, [], 3)
    with pytest.raises(ValueError, match="top_p"):
        generate(model, PROMPT, 3, top_p=1.5)
