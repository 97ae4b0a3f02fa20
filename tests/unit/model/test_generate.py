"""Generation: the memory cache must reproduce full re-runs; sampling options behave."""

from __future__ import annotations

import pytest
import torch
from lively import lively

from lmforge.model import generate
from lmforge.model.generate import prefill, sample_token

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


@pytest.fixture(params=["xl", "absolute", "rotary"])
def short_segments(request, make_model):
    """Four-token segments in a 16-token window, so a prompt within the window spans several."""
    return lively(make_model(request.param, seq_len=4, mem_len=12))


def segment_lengths(model) -> tuple[list[int], list[int]]:
    """Lists that record the segment and memory lengths of every later forward."""
    segments, memories = [], []

    def record(module, args, kwargs):
        segments.append(args[0].size(1))
        mems = args[1] if len(args) > 1 else kwargs.get("mems")
        memories.append(mems[0].size(1) if mems else 0)

    model.register_forward_pre_hook(record, with_kwargs=True)
    return segments, memories


@pytest.mark.parametrize("position", ["xl", "absolute", "rotary"])
@pytest.mark.parametrize(("seq_len", "mem_len", "length"), [
    (4, 12, 1), (4, 12, 3), (4, 12, 4), (4, 12, 7), (4, 12, 12), (4, 12, 16),
    (8, 3, 5), (8, 3, 9), (8, 3, 11),  # the last segment needs more than mem_len of memory
])
def test_prefill_within_the_window_equals_one_forward(make_model, position, seq_len, mem_len, length):
    """Every token of a prompt that fits the window sees every earlier one, as in one forward."""
    model = lively(make_model(position, seq_len=seq_len, mem_len=mem_len))
    window = model.config.context_len
    prompt = list(range(3, 3 + length))
    whole = model(torch.tensor([prompt]), mem_len=window - 1)
    mems, logits = prefill(model, prompt)
    torch.testing.assert_close(logits, whole.logits[0, -1], atol=1e-10, rtol=1e-10)
    for got, want in zip(mems, whole.mems, strict=True):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)


def test_cached_greedy_equals_uncached_for_a_prompt_of_several_segments(short_segments):
    prompt = list(range(5, 16))
    n = short_segments.config.context_len - len(prompt)
    for sampling in ({"temperature": 0}, {"temperature": 1.0, "seed": 3}):
        cached = generate(short_segments, prompt, n, **sampling)
        assert cached == generate(short_segments, prompt, n, use_cache=False, **sampling)
    assert len(set(cached)) > 1  # the sampled tokens differ, so every step's logits were compared


def test_a_long_prompt_is_read_in_segments_from_token_zero(short_segments):
    model, window = short_segments, short_segments.config.context_len
    segments, memories = segment_lengths(model)
    generate(model, list(range(30)), 2, temperature=0)
    assert segments == [4] * 7 + [2] + [1]  # then one decoding step
    assert memories == [0, 4, 8, 12, 12, 12, 12, 14] + [window - 1]  # memory + segment within the window


def test_a_long_prompt_keeps_context_that_truncation_drops(short_segments):
    """Token 0 of a prompt one segment longer than the window still changes the last logits (through
    the memory of deeper layers; float64, so any change is far above rounding)."""
    model = short_segments
    prompt = list(range(1, model.config.context_len + 5))
    _, logits = prefill(model, prompt)
    _, changed = prefill(model, [prompt[0] + 1] + prompt[1:])
    assert (logits - changed).abs().max() > 1e-6


def test_prefill_resumes_at_a_boundary(short_segments):
    model, prompt = short_segments, list(range(2, 27))
    mems, logits = prefill(model, prompt)
    at_boundary, _ = prefill(model, prompt[:12])
    resumed_mems, resumed = prefill(model, prompt, at_boundary, start=12)
    torch.testing.assert_close(resumed, logits, atol=0, rtol=0)
    torch.testing.assert_close(resumed_mems, mems, atol=0, rtol=0)
    with pytest.raises(ValueError, match="multiple of seq_len"):
        prefill(model, prompt, at_boundary, start=10)


def test_sample_token_draws_what_generate_draws(model):
    """The public sampler with the same generator reproduces generate's sampled tokens."""
    prompt, window = PROMPT * 5, model.config.context_len
    expected = generate(model, prompt, 6, temperature=1.5, top_k=30, top_p=0.9, seed=4)
    generator = torch.Generator().manual_seed(4)
    mems, logits = prefill(model, prompt)
    tokens = []
    for _ in range(6):
        tokens.append(sample_token(logits, 1.5, 30, 0.9, generator))
        out = model(torch.tensor([tokens[-1:]]), mems, mem_len=window - 1)
        mems, logits = out.mems, out.logits[0, -1]
    assert tokens == expected
