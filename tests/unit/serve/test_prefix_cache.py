"""Prefix cache: a warm prefill equals a cold one and runs fewer tokens; LRU by bytes; no aliasing."""

from __future__ import annotations

import pytest
import torch
from lively import lively

from lmforge.model import ModelConfig, Transformer, generate
from lmforge.model.generate import prefill
from lmforge.serve.prefix_cache import PrefixCache, prefill_cached

CONFIGS = {
    "xl": {"d_model": 32, "n_layers": 2, "n_heads": 4, "d_ff": 64, "seq_len": 4, "mem_len": 6},
    "absolute-deep": {"d_model": 48, "n_layers": 3, "n_heads": 6, "d_ff": 96, "seq_len": 5, "mem_len": 3,
                      "position": "absolute"},
}
LENGTHS = [3, 4, 5, 9, 10, 12, 23]
"""Prompt lengths around the segment boundaries and the windows (10 and 8), and well past them."""
BIG = 1 << 30


@pytest.fixture(params=list(CONFIGS), scope="module")
def model(request):
    """Random weights at unit scale, residual branches larger than the (tied) embedding, which
    otherwise makes the model repeat its input token."""
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=61, dropout=0.1, **CONFIGS[request.param])).eval()
    return lively(model)


def prompt_of(length: int, offset: int = 0) -> list[int]:
    return [(7 * i + 3 + offset) % 61 for i in range(length)]


@torch.no_grad()
def greedy_after(model, mems, logits, n: int) -> list[int]:
    """Greedy tokens decoded from a prefill's result, one token per step as `generate` decodes."""
    tokens = []
    for _ in range(n):
        tokens.append(int(logits.argmax()))
        out = model(torch.tensor([tokens[-1:]]), mems, mem_len=model.config.context_len - 1)
        mems, logits = out.mems, out.logits[0, -1]
    return tokens


class TokenCounter:
    """Tokens the model actually runs, counted by a forward pre-hook."""

    def __init__(self, model):
        self.tokens = 0
        self.handle = model.register_forward_pre_hook(self._count)

    def _count(self, module, args):
        self.tokens += args[0].numel()

    def take(self) -> int:
        tokens, self.tokens = self.tokens, 0
        return tokens


@pytest.fixture
def counter(model):
    counter = TokenCounter(model)
    yield counter
    counter.handle.remove()


def assert_same(got, want):
    (got_mems, got_logits), (want_mems, want_logits) = got, want
    torch.testing.assert_close(got_logits, want_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_mems, want_mems, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("length", LENGTHS)
def test_warm_prefill_equals_cold(model, length):
    """The prompt again, and a follow-up turn that extends it, resume from the cache to what a cold
    prefill gives, and decode the same greedy continuation as `generate` from scratch."""
    cache = PrefixCache(BIG)
    prompt = prompt_of(length)
    follow_up = prompt + prompt_of(7, offset=5)
    assert_same(prefill_cached(model, prompt, cache), prefill(model, prompt))
    for tokens in (prompt, follow_up):
        warm = prefill_cached(model, tokens, cache)
        assert_same(warm, prefill(model, tokens))
        assert greedy_after(model, *warm, 6) == generate(model, tokens, 6, temperature=0)
    assert cache.hits == (2 if length >= model.config.seq_len else 0)


def test_a_follow_up_runs_only_the_tokens_after_the_last_boundary(model, counter):
    seq_len = model.config.seq_len
    cache = PrefixCache(BIG)
    first = prompt_of(3 * seq_len + 2)
    prefill_cached(model, first, cache)
    assert counter.take() == len(first)
    follow_up = first + prompt_of(6, offset=1)
    prefill_cached(model, follow_up, cache)
    assert counter.take() == len(follow_up) - 3 * seq_len
    assert (cache.hits, cache.misses) == (1, 1)


def test_a_prompt_ending_on_a_boundary_is_free_the_second_time(model, counter):
    cache = PrefixCache(BIG)
    prompt = prompt_of(4 * model.config.seq_len)
    cold = prefill_cached(model, prompt, cache)
    counter.take()
    assert_same(prefill_cached(model, prompt, cache), cold)
    assert counter.take() == 0


def test_another_prefix_of_the_same_length_is_a_miss(model, counter):
    """Only the same token ids resume: same-length prompts that differ anywhere run in full."""
    seq_len = model.config.seq_len
    cache = PrefixCache(BIG)
    prompt = prompt_of(2 * seq_len + 1)
    prefill_cached(model, prompt, cache)
    for position in (0, seq_len - 1, 2 * seq_len - 1):
        other = list(prompt)
        other[position] = (other[position] + 1) % 61
        counter.take()
        assert_same(prefill_cached(model, other, cache), prefill(model, other))
        assert counter.take() == 2 * len(other) - (position // seq_len) * seq_len


def test_lookup_takes_the_longest_stored_prefix():
    cache = PrefixCache(BIG)
    tokens = list(range(20))
    for n in (4, 8, 12):
        cache.store(tokens[:n], [torch.full((1, 2, 3), float(n))], torch.full((5,), float(n)))
    assert cache.lookup(tokens).length == 12
    assert cache.lookup(tokens[:11]).length == 8
    found = cache.lookup(tokens[:8])
    assert found.length == 8 and found.logits[0] == 8 and found.mems[0][0, 0, 0] == 8
    assert cache.lookup(tokens[:3]) is None
    assert cache.lookup([1, *tokens[1:]]) is None
    assert (cache.hits, cache.misses) == (3, 2)


def entry(value: float) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Memory of two layers [1, 3, 4] and logits [5]: 2·12 + 5 = 29 float32 values, 116 bytes."""
    return [torch.full((1, 3, 4), value), torch.full((1, 3, 4), value)], torch.full((5,), value)


def test_least_recently_used_is_evicted_by_bytes():
    cache = PrefixCache(max_bytes=2 * 116 + 50)  # room for two entries
    a, b, c = [1, 2], [3, 4], [5, 6]
    cache.store(a, *entry(1.0))
    cache.store(b, *entry(2.0))
    assert cache.lookup(a) is not None  # a is now the most recently used
    cache.store(c, *entry(3.0))
    assert cache.lookup(b) is None
    assert cache.lookup(a).logits[0] == 1.0 and cache.lookup(c).logits[0] == 3.0
    assert (len(cache), cache.nbytes) == (2, 2 * 116)
    cache.store([7] * 9, [torch.zeros(1, 100, 4)], torch.zeros(5))  # larger than the whole cache
    assert (len(cache), cache.nbytes) == (2, 2 * 116)
    assert cache.lookup([7] * 9) is None


def test_stored_tensors_do_not_alias():
    cache = PrefixCache(BIG)
    mems, logits = entry(1.0)
    cache.store([1, 2, 3], mems, logits)
    mems[0].add_(5)
    logits.add_(5)
    found = cache.lookup([1, 2, 3])
    found.mems[1].add_(7)
    found.logits.add_(7)
    again = cache.lookup([1, 2, 3])
    assert all(bool((m == 1.0).all()) for m in again.mems) and bool((again.logits == 1.0).all())
