"""Continuous batching: every sequence's tokens equal `generate` run alone for it, while sequences join
and leave the batch at different steps; cancelling frees a slot; stop tokens; the asyncio driver."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import replace

import pytest
import torch
from lively import lively

from lmforge.model import ModelConfig, Transformer, generate
from lmforge.serve.batcher import InvalidRequest, QueueFull, ShuttingDown
from lmforge.serve.continuous import (
    ContinuousBatcher,
    Finished,
    GenerationBatch,
    SamplingParams,
    StepReport,
    Token,
)
from lmforge.serve.prefix_cache import PrefixCache

CONFIGS = {
    "xl": {"d_model": 32, "n_layers": 2, "n_heads": 4, "d_ff": 64, "seq_len": 4, "mem_len": 6},
    "absolute-deep": {"d_model": 48, "n_layers": 3, "n_heads": 6, "d_ff": 96, "seq_len": 5, "mem_len": 3,
                      "position": "absolute"},
}
SAMPLING = {
    "greedy": SamplingParams(temperature=0),
    "seeded": SamplingParams(temperature=1.3, top_k=25, top_p=0.95),
}
ARRIVALS = [(3, 6, 0), (12, 2, 0), (25, 9, 0), (6, 4, 1), (1, 7, 2), (17, 5, 2), (9, 3, 4)]
"""(prompt length, max_new_tokens, step at which it is added): prompts shorter and longer than the
windows (10 and 8), and more sequences than MAX_RUNNING, so some wait."""
MAX_RUNNING = 3
MAX_STEPS = 100
"""More than any test's sequences need one after another."""
HANG_GUARD_SECONDS = 120
"""Not a timing check: a driver bug that never ends a stream fails here rather than at pytest's timeout."""


@pytest.fixture(params=list(CONFIGS), scope="module")
def model(request):
    """A float64 model (so the batched forward's rounding never flips a sampled token) whose tokens
    depend on the context: random weights at unit scale, residual branches larger than the (tied)
    embedding, which otherwise makes the model repeat its input token."""
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=61, dropout=0.1, **CONFIGS[request.param])).double().eval()
    return lively(model)


def prompt_of(length: int, offset: int = 0) -> list[int]:
    return [(7 * i + 3 + offset) % 61 for i in range(length)]


def alone(model, prompt: list[int], params: SamplingParams) -> list[int]:
    """The independent reference: `generate` for this sequence only."""
    return generate(model, prompt, params.max_new_tokens, temperature=params.temperature, top_k=params.top_k,
                    top_p=params.top_p, seed=params.seed, eos_id=params.eos_id)


def run(batch: GenerationBatch, arrivals: dict[int, list[tuple[list[int], SamplingParams]]],
        cancels: dict[int, list[int]] | None = None) -> tuple[list[int], list[tuple[int, object]]]:
    """Step until idle, adding each step's arrivals (and cancelling ids) before it; returns the ids in
    order of adding and every (step, event)."""
    ids, log, step = [], [], 0
    while step <= max(arrivals) or not batch.idle:
        assert step < MAX_STEPS, f"the batch is still busy after {MAX_STEPS} steps"
        ids += [batch.add(prompt, params) for prompt, params in arrivals.get(step, [])]
        for seq_id in (cancels or {}).get(step, []):
            batch.cancel(seq_id)
        log += [(step, event) for event in batch.step()]
        step += 1
    return ids, log


def expected_schedule(arrivals: list[tuple[int, int, int]], max_running: int) -> dict[int, tuple[int, int]]:
    """Step of each sequence's first and last token when it joins at the first step (at or after it is
    added) with a free slot, first come first served, emits one token per step and leaves at the step
    of its last token, whose slot the next waiting sequence takes in that same step."""
    waiting, left, schedule, step = deque(), {}, {}, 0
    while len(schedule) < len(arrivals) or left:
        waiting += [i for i, (_, _, at) in enumerate(arrivals) if at == step]
        for i in list(left):
            left[i] -= 1
            if not left[i]:
                del left[i]
                schedule[i] = (schedule[i][0], step)
        while waiting and len(left) < max_running:
            i = waiting.popleft()
            left[i] = arrivals[i][1] - 1
            schedule[i] = (step, step)
            if not left[i]:
                del left[i]
        step += 1
    return schedule


@pytest.mark.parametrize("sampling", list(SAMPLING))
def test_each_sequence_generates_what_it_generates_alone(model, sampling):
    requests = [(prompt_of(length, offset=i), replace(SAMPLING[sampling], max_new_tokens=n, seed=10 + i))
                for i, (length, n, _) in enumerate(ARRIVALS)]
    arrivals = {}
    for request, (_, _, at) in zip(requests, ARRIVALS, strict=True):
        arrivals.setdefault(at, []).append(request)
    ids, log = run(GenerationBatch(model, max_running=MAX_RUNNING), arrivals)

    for seq_id, (prompt, params) in zip(ids, requests, strict=True):
        assert [e.token for _, e in log if isinstance(e, Token) and e.seq_id == seq_id] == alone(
            model, prompt, params)
        assert [e.reason for _, e in log if isinstance(e, Finished) and e.seq_id == seq_id] == ["length"]
    lasts = {ids.index(e.seq_id): step for step, e in log if isinstance(e, Token)}
    firsts = {ids.index(e.seq_id): step for step, e in reversed(log) if isinstance(e, Token)}
    expected = expected_schedule(ARRIVALS, MAX_RUNNING)
    assert {i: (firsts[i], lasts[i]) for i in firsts} == expected
    assert len({first for first, _ in expected.values()}) > 3  # joins and leaves at many different steps
    assert len({last for _, last in expected.values()}) > 3
    assert any(first > at for (first, _), (_, _, at) in zip(expected.values(), ARRIVALS, strict=True))


def test_the_prefix_cache_changes_nothing_but_the_work(model):
    """Chat turns that repeat the conversation: the same tokens with and without the cache."""
    first = prompt_of(11)
    turns = [first, first + prompt_of(5, offset=2), first + prompt_of(5, offset=2) + prompt_of(9, offset=4)]
    params = SamplingParams(max_new_tokens=4, temperature=0.9, seed=3)
    cache = PrefixCache(1 << 30)
    batch = GenerationBatch(model, max_running=2, prefix_cache=cache)
    ids, log = run(batch, {step: [(turn, params)] for step, turn in enumerate(turns)})
    for seq_id, turn in zip(ids, turns, strict=True):
        assert [e.token for _, e in log if isinstance(e, Token) and e.seq_id == seq_id] == alone(
            model, turn, params)
    assert cache.hits == 2


def test_a_cancelled_sequence_frees_its_slot_and_emits_no_more(model):
    params = SamplingParams(max_new_tokens=20, temperature=0)
    batch = GenerationBatch(model, max_running=2)
    ids = [batch.add(prompt_of(n, offset=n), params) for n in (5, 9, 3, 7)]
    batch.step()
    batch.step()
    batch.cancel(ids[0])
    batch.cancel(ids[3])  # still waiting: it never runs
    events = batch.step()
    assert Finished(ids[0], "cancelled") in events and Finished(ids[3], "cancelled") in events
    assert {e.seq_id for e in events if isinstance(e, Token)} == {ids[1], ids[2]}  # ids[2] joined now
    assert (batch.running, batch.waiting) == (2, 0)
    later = [e for _ in range(3) for e in batch.step()]
    assert {e.seq_id for e in later} == {ids[1], ids[2]}
    tokens_of_2 = [e.token for e in events + later if isinstance(e, Token) and e.seq_id == ids[2]]
    assert tokens_of_2 == alone(model, prompt_of(3, offset=3), params)[:4]


def test_eos_and_stop_ids_end_a_sequence_without_emitting_them(model):
    prompt, params = prompt_of(7), SamplingParams(max_new_tokens=12, seed=5)
    drawn = alone(model, prompt, params)
    cut = next(i for i in range(2, 12) if drawn[i] not in drawn[:i])  # a token not drawn earlier
    batch = GenerationBatch(model)
    by_eos = batch.add(prompt, replace(params, eos_id=drawn[cut]))
    by_stop = batch.add(prompt, replace(params, stop_ids=frozenset({drawn[cut], 60})))
    _, log = run(batch, {0: []})
    for seq_id in (by_eos, by_stop):
        events = [e for _, e in log if e.seq_id == seq_id]
        assert events == [Token(seq_id, t) for t in drawn[:cut]] + [Finished(seq_id, "stop")]


def test_step_reports_running_tokens_and_time_to_first_token(model):
    """Under a clock the test sets: the wait before joining and the time to the first token."""
    now = [0.0]
    reports: list[StepReport] = []
    batch = GenerationBatch(model, max_running=1, on_step=reports.append, clock=lambda: now[0])
    batch.add(prompt_of(4), SamplingParams(max_new_tokens=2, temperature=0))
    now[0] = 1.0
    batch.add(prompt_of(6), SamplingParams(max_new_tokens=1, temperature=0))
    now[0] = 2.5
    batch.step()
    now[0] = 4.0
    batch.step()
    assert reports == [
        StepReport(running=1, waiting=1, tokens=1, queue_seconds=(2.5,), first_token_seconds=(2.5,)),
        StepReport(running=0, waiting=0, tokens=2, queue_seconds=(3.0,), first_token_seconds=(3.0,)),
    ]


def test_bad_requests_and_a_full_queue_are_refused(model):
    batch = GenerationBatch(model, max_running=1, max_waiting=1)
    for prompt, params, message in [
        ([], SamplingParams(), "non-empty prompt"),
        ([1, 61], SamplingParams(), "0..60"),
        ([1], SamplingParams(max_new_tokens=0), "at least 1"),
        ([1], SamplingParams(top_p=1.5), "top_p"),
    ]:
        with pytest.raises(InvalidRequest, match=message):
            batch.add(prompt, params)
    batch.add([1, 2], SamplingParams())
    with pytest.raises(QueueFull):
        batch.add([1, 2], SamplingParams())


# --- the asyncio driver ----------------------------------------------------------------------------


def run_async(scenario):
    return asyncio.run(asyncio.wait_for(scenario, HANG_GUARD_SECONDS))


def test_concurrent_streams_each_get_their_own_tokens(model):
    requests = [(prompt_of(length, offset=i), SamplingParams(max_new_tokens=n, temperature=1.1, seed=i))
                for i, (length, n, _) in enumerate(ARRIVALS)]

    async def consume(batcher, prompt, params):
        stream = batcher.stream(prompt, params)
        tokens = [token async for token in stream]
        return tokens, stream.finish_reason

    async def scenario():
        async with ContinuousBatcher(model, max_running=MAX_RUNNING) as batcher:
            return await asyncio.gather(*(consume(batcher, *request) for request in requests))

    results = run_async(scenario())
    assert results == [(alone(model, *request), "length") for request in requests]


LONG = SamplingParams(max_new_tokens=500, temperature=0)
SHORT = SamplingParams(max_new_tokens=3, temperature=0)


def test_closing_a_stream_frees_its_slot(model):
    """One slot, held by a long sequence whose stream is closed after two tokens: it yields nothing
    more, leaves the batch (far fewer than its 500 tokens are ever decoded) and the next one runs."""
    reports: list[StepReport] = []

    async def scenario():
        async with ContinuousBatcher(model, max_running=1, on_step=reports.append) as batcher:
            closed = batcher.stream(prompt_of(5), LONG)
            after = batcher.stream(prompt_of(6), SHORT)
            got = [await anext(closed), await anext(closed)]
            await closed.aclose()
            rest = [token async for token in closed]
            return got, rest, closed.finish_reason, [token async for token in after]

    got, rest, reason, tokens = run_async(scenario())
    assert (got, rest, reason) == (alone(model, prompt_of(5), LONG)[:2], [], "cancelled")
    assert tokens == alone(model, prompt_of(6), SHORT)
    assert sum(report.tokens for report in reports) < 50


def test_cancelling_the_task_that_waits_on_a_stream_cancels_its_sequence(model):
    reports: list[StepReport] = []

    async def scenario():
        async with ContinuousBatcher(model, max_running=1, on_step=reports.append) as batcher:
            holder = batcher.stream(prompt_of(5), SHORT)
            waiting = batcher.stream(prompt_of(6), LONG)
            after = batcher.stream(prompt_of(7), SHORT)
            task = asyncio.create_task(anext(waiting))
            await asyncio.sleep(0)  # the task now waits for a first token that needs holder's slot
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return ([token async for token in holder], [token async for token in waiting],
                    waiting.finish_reason, [token async for token in after])

    held, never, reason, tokens = run_async(scenario())
    assert (held, never, reason) == (alone(model, prompt_of(5), SHORT), [], "cancelled")
    assert tokens == alone(model, prompt_of(7), SHORT)
    assert sum(report.tokens for report in reports) == 2 * SHORT.max_new_tokens


def test_a_full_queue_and_a_closing_batcher_refuse_at_once(model):
    async def scenario():
        batcher = ContinuousBatcher(model, max_running=1, max_waiting=1)
        first = batcher.stream(prompt_of(3), SamplingParams(max_new_tokens=2, temperature=0))
        with pytest.raises(QueueFull):
            batcher.stream(prompt_of(3), SamplingParams(max_new_tokens=2, temperature=0))
        closing = asyncio.create_task(batcher.close())
        await asyncio.sleep(0)
        with pytest.raises(ShuttingDown):
            batcher.stream(prompt_of(3), SamplingParams())
        await closing  # drains: the queued sequence still runs to its end
        return [token async for token in first], first.finish_reason

    assert run_async(scenario()) == (alone(model, prompt_of(3), SamplingParams(max_new_tokens=2,
                                                                                  temperature=0)), "length")


def test_an_error_in_a_step_reaches_every_open_stream(model):
    """A step that raises (here the metrics callback) fails the open streams instead of leaving them
    waiting forever, and the batcher refuses new sequences after it."""
    def broken_metrics(report):
        if report.tokens:
            raise RuntimeError("metrics are down")

    async def scenario():
        batcher = ContinuousBatcher(model, on_step=broken_metrics)
        streams = [batcher.stream(prompt_of(4, offset=i), SHORT) for i in range(2)]
        for stream in streams:
            with pytest.raises(RuntimeError, match="metrics are down"):
                await anext(stream)
            assert [token async for token in stream] == []
        with pytest.raises(ShuttingDown):
            batcher.stream(prompt_of(4), SHORT)
        await batcher.close()

    run_async(scenario())
