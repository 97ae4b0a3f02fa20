"""The dynamic batcher: Triton's batching rules on the pure queue with the time passed in (integer
microseconds), then the asyncio driver end to end under a clock the tests advance by hand.

No test sleeps or measures time: `FakeClock` only moves when a test calls `advance`, and the event
loop is run until a condition holds (`until`) or until it has nothing left to do (`settle`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmforge.config import ConfigError, build
from lmforge.serve.batcher import (
    BatcherConfig,
    BatchQueue,
    BatchReport,
    DynamicBatcher,
    InvalidRequest,
    QueueFull,
    QueueTimeout,
    Request,
    ShuttingDown,
)

FAST = settings(max_examples=100, derandomize=True, deadline=None, database=None)


def queue(**settings: object) -> BatchQueue:
    return BatchQueue(BatcherConfig(**{"max_queue_delay_microseconds": 1000, **settings}))


def push(q: BatchQueue, name: str, now: int = 0, **fields: object) -> Request:
    request = Request(name, **fields)
    q.push(request, now)
    return request


def names(batch: list[Request] | None) -> list[str] | None:
    return None if batch is None else [request.payload for request in batch]


# --- the rules, on the pure queue ---------------------------------------------------------------


def test_largest_preferred_size_goes_before_a_larger_batch_that_is_not_preferred():
    q = queue(max_batch_size=8, preferred_batch_size=(2, 4))
    for i in range(6):
        push(q, f"r{i}")
    assert names(q.next_batch(0)) == ["r0", "r1", "r2", "r3"]
    assert names(q.next_batch(0)) == ["r4", "r5"]  # 2 is preferred too


def test_full_batch_goes_at_once_and_the_rest_waits():
    q = queue(max_batch_size=4)
    for i in range(6):
        push(q, f"r{i}")
    assert names(q.next_batch(0)) == ["r0", "r1", "r2", "r3"]
    assert q.next_batch(0) is None


def test_batch_waits_for_the_delay_of_its_oldest_request_then_goes_as_it_is():
    q = queue(max_batch_size=8, max_queue_delay_microseconds=1000)
    push(q, "a", now=0)
    push(q, "b", now=400)
    assert q.next_batch(999) is None
    assert q.wake_at(999) == 1000
    assert names(q.next_batch(1000)) == ["a", "b"]
    push(q, "c", now=1500)  # the delay counts from the oldest request still queued
    assert q.next_batch(2000) is None
    assert names(q.next_batch(2500)) == ["c"]
    assert q.wake_at(2500) is None


def test_no_delay_sends_whatever_waits():
    q = queue(max_batch_size=8, max_queue_delay_microseconds=0)
    push(q, "a")
    assert names(q.next_batch(0)) == ["a"]


def test_arrival_that_completes_a_full_or_preferred_batch_sends_it_at_once():
    q = queue(max_batch_size=4)
    for i in range(3):
        push(q, f"r{i}", now=0)
    assert q.next_batch(10) is None
    push(q, "r3", now=20)
    assert names(q.next_batch(20)) == ["r0", "r1", "r2", "r3"]

    q = queue(max_batch_size=8, preferred_batch_size=(2,))
    push(q, "a", now=0)
    assert q.next_batch(5) is None
    push(q, "b", now=5)
    assert q.wake_at(5) == 5
    assert names(q.next_batch(5)) == ["a", "b"]


def test_batch_that_cannot_grow_into_a_preferred_size_goes_as_it_is():
    """Triton: once the next request would pass the largest preferred size, the batch goes."""
    q = queue(max_batch_size=8, preferred_batch_size=(4,))
    push(q, "three", size=3)
    push(q, "two", size=2)
    assert names(q.next_batch(0)) == ["three"]
    assert q.next_batch(0) is None


def test_higher_priority_goes_first_and_each_level_is_first_in_first_out():
    q = queue(max_batch_size=2, priority_levels=3, max_queue_delay_microseconds=0)
    push(q, "low1", priority=3)
    push(q, "low2", priority=0)  # 0: the default level, the lowest unless configured
    push(q, "high1", priority=1)
    push(q, "mid", priority=2)
    push(q, "high2", priority=1)
    push(q, "low3", priority=7)  # out of range: the default level, as Triton does
    batches = [names(q.next_batch(0)) for _ in range(3)]
    assert batches == [["high1", "high2"], ["mid", "low1"], ["low2", "low3"]]


def test_default_priority_level_is_where_requests_without_one_go():
    q = queue(max_batch_size=1, priority_levels=3, default_priority_level=2)
    push(q, "low", priority=3)
    push(q, "plain")
    assert names(q.next_batch(0)) == ["plain"]


def test_bounded_queue_refuses_a_request_beyond_max_queue_size_per_level():
    q = queue(max_queue_size=2, priority_levels=2)
    assert q.capacity == 4
    first = push(q, "a", priority=2)
    push(q, "b", priority=2)
    with pytest.raises(QueueFull, match="max_queue_size=2"):
        push(q, "c", priority=2)
    push(q, "urgent", priority=1)  # another level has its own room
    assert q.remove(first)
    push(q, "c", priority=2)
    assert (q.requests, q.rows) == (3, 3)
    assert queue(max_queue_size=0).capacity is None


def test_reject_timeout_fails_the_request_and_it_never_runs():
    q = queue(max_batch_size=8, max_queue_delay_microseconds=10_000, default_timeout_microseconds=500)
    push(q, "a", now=0)
    push(q, "b", now=300)
    assert q.wake_at(300) == 500  # the first timeout comes before the end of the delay
    assert q.expire(499) == []
    assert names(q.expire(500)) == ["a"]
    assert q.requests == 1 and q.next_batch(799) is None
    assert names(q.expire(800)) == ["b"]
    assert q.next_batch(10_300) is None and q.wake_at(10_300) is None


def test_timeout_override_may_shorten_the_default_but_never_lengthen_it():
    q = queue(default_timeout_microseconds=500)
    assert push(q, "short", timeout_us=100).deadline == 100
    assert push(q, "long", timeout_us=900).deadline == 500
    assert push(queue(), "no default", timeout_us=100).deadline == 100
    assert push(queue(), "none").deadline is None
    fixed = queue(default_timeout_microseconds=500, allow_timeout_override=False)
    assert push(fixed, "ignored", timeout_us=100).deadline == 500


def test_delay_timeout_moves_the_request_behind_the_unexpired_ones_of_its_level_and_above():
    q = queue(max_batch_size=1, priority_levels=2, timeout_action="DELAY")
    push(q, "late", now=0, priority=1, timeout_us=100)
    push(q, "b", now=0, priority=1)
    push(q, "low", now=0, priority=2)
    push(q, "d", now=150, priority=1)
    assert q.expire(200) == []  # DELAY never fails a request
    assert [names(q.next_batch(200)) for _ in range(4)] == [["b"], ["d"], ["late"], ["low"]]


def test_removed_request_never_runs_and_frees_its_slot():
    q = queue(max_queue_size=2, max_queue_delay_microseconds=0)
    gone = push(q, "gone")
    push(q, "kept")
    assert q.remove(gone)
    assert not q.remove(gone)
    push(q, "new")
    assert names(q.next_batch(0)) == ["kept", "new"]
    assert not q.remove(Request("never queued"))


def test_requests_of_several_rows_are_never_split_nor_past_max_batch_size():
    q = queue(max_batch_size=4)
    push(q, "three", size=3)
    push(q, "two", size=2)
    push(q, "one", size=1)
    assert names(q.next_batch(0)) == ["three"]  # the next one does not fit: full, goes at once
    assert q.next_batch(0) is None
    assert names(q.next_batch(1000)) == ["two", "one"]
    for size in (0, 5):
        with pytest.raises(InvalidRequest, match="max_batch_size=4"):
            push(q, "bad", size=size)
    with pytest.raises(InvalidRequest, match="-1 tokens"):
        push(q, "bad", length=-1)


def test_short_and_long_requests_never_share_a_batch_but_two_short_ones_do():
    q = queue(max_batch_size=8, length_buckets=(16, 64))
    push(q, "short5", length=5)
    push(q, "long500", length=500)
    push(q, "short16", length=16)  # the bound belongs to its bucket
    push(q, "mid17", length=17)
    assert names(q.next_batch(1000)) == ["short5", "short16"]
    assert names(q.next_batch(1000)) == ["long500"]
    assert names(q.next_batch(1000)) == ["mid17"]


def test_no_length_buckets_batches_every_length_together():
    q = queue(max_batch_size=8, length_buckets=())
    push(q, "short", length=5)
    push(q, "long", length=5000)
    assert names(q.next_batch(1000)) == ["short", "long"]


def test_oldest_request_is_served_first_even_when_later_ones_could_form_a_batch():
    q = queue(max_batch_size=8, preferred_batch_size=(2,), length_buckets=(16, 64))
    push(q, "old long", now=0, length=500)
    push(q, "short a", now=10, length=5)
    push(q, "short b", now=20, length=6)
    assert q.next_batch(500) is None  # the shorts form a preferred batch but are not first
    assert names(q.next_batch(1000)) == ["old long"]
    assert names(q.next_batch(1000)) == ["short a", "short b"]


@pytest.mark.parametrize(("settings", "key"), [
    ({"preferred_batch_size": [128]}, "preferred_batch_size"),
    ({"priority_levels": 2, "default_priority_level": 3}, "default_priority_level"),
    ({"length_buckets": [64, 16]}, "length_buckets"),
    ({"timeout_action": "DROP"}, "timeout_action"),
    ({"max_batch_size": 0}, "max_batch_size"),
])
def test_bad_settings_fail_in_one_line_naming_the_key(settings, key):
    with pytest.raises(ConfigError, match=key) as err:
        build(BatcherConfig, settings, source="serve.yaml")
    assert "\n" not in str(err.value)


# --- random sequences of pushes, cancellations and clock steps -----------------------------------

PUSH = st.tuples(st.just("push"), st.integers(1, 4), st.sampled_from([3, 10, 40]), st.integers(0, 3),
                 st.sampled_from([0, 0, 30, 200]))
OPERATIONS = st.lists(st.one_of(
    PUSH, PUSH, PUSH,
    st.tuples(st.just("cancel"), st.integers(0, 50)),
    st.tuples(st.just("advance"), st.integers(0, 60)),
    st.tuples(st.just("take"),),
), min_size=10, max_size=80)


@FAST
@given(
    max_batch_size=st.integers(4, 8),
    preferred=st.lists(st.integers(1, 4), max_size=2, unique=True),
    delay=st.sampled_from([0, 25, 100]),
    action=st.sampled_from(["REJECT", "DELAY"]),
    max_queue_size=st.integers(0, 6),
    levels=st.integers(1, 3),
    buckets=st.sampled_from([(), (8,), (8, 32)]),
    operations=OPERATIONS,
)
def test_random_sequences_never_lose_duplicate_reorder_or_overfill(
        max_batch_size, preferred, delay, action, max_queue_size, levels, buckets, operations):
    q = BatchQueue(BatcherConfig(
        max_batch_size=max_batch_size, preferred_batch_size=tuple(preferred),
        max_queue_delay_microseconds=delay, timeout_action=action, max_queue_size=max_queue_size,
        priority_levels=levels, length_buckets=buckets))
    now = 0
    pushed: list[Request] = []
    outcome: dict[int, str] = {}  # id(request) -> "ran" | "rejected" | "cancelled"
    sent: list[Request] = []

    def bucket(length: int) -> int:
        return sum(length > bound for bound in buckets)

    def record(key: Request, how: str) -> None:
        assert id(key) not in outcome, f"{key.payload} came back twice"
        outcome[id(key)] = how

    def take(flush: bool = False) -> bool:
        for request in q.expire(now):
            record(request, "rejected")
        batch = q.next_batch(now, flush=flush)
        if batch is None:
            return False
        assert batch and sum(r.size for r in batch) <= max_batch_size
        assert len({bucket(r.length) for r in batch}) == 1
        for request in batch:
            record(request, "ran")
        sent.extend(batch)
        return True

    for op in operations:
        if op[0] == "push":
            request = Request(f"r{len(pushed)}", size=op[1], length=op[2], priority=op[3], timeout_us=op[4])
            try:
                q.push(request, now)
            except QueueFull:
                continue
            pushed.append(request)
        elif op[0] == "cancel" and pushed:
            request = pushed[op[1] % len(pushed)]
            if q.remove(request):
                record(request, "cancelled")
        elif op[0] == "advance":
            now += op[1]
        else:
            take()
        for request in q.expire(now):
            record(request, "rejected")
        waiting = [r for r in pushed if id(r) not in outcome]
        wake = q.wake_at(now)
        assert (wake is None) == (not waiting) and (wake is None or wake >= now)
        assert (q.requests, q.rows) == (len(waiting), sum(r.size for r in waiting))

    for _ in range(10 * len(pushed) + 1):  # follow the queue's own wake-ups until it is empty
        wake = q.wake_at(now)
        if wake is None:
            break
        now = max(now, wake)
        take()
    assert q.wake_at(now) is None
    assert set(outcome) == {id(r) for r in pushed}
    if action == "REJECT":  # without DELAY moves, each (level, length bucket) runs in arrival order
        for group in {(r.level, bucket(r.length)) for r in sent}:
            order = [pushed.index(r) for r in sent if (r.level, bucket(r.length)) == group]
            assert order == sorted(order)


# --- the asyncio driver ---------------------------------------------------------------------------


class FakeClock:
    """Time that moves only when a test calls `advance`."""

    def __init__(self) -> None:
        self.t = 0
        self._sleepers: list[tuple[int, asyncio.Future[None]]] = []

    def now(self) -> int:
        return self.t

    async def sleep_until(self, t: int) -> None:
        if t <= self.t:
            return
        future = asyncio.get_running_loop().create_future()
        self._sleepers.append((t, future))
        await future

    async def advance(self, microseconds: int) -> None:
        """Let everything due at the current time happen, move the time, wake the sleepers it passed."""
        await settle()
        self.t += microseconds
        for t, future in self._sleepers:
            if t <= self.t and not future.done():
                future.set_result(None)
        self._sleepers = [(t, f) for t, f in self._sleepers if not f.done()]
        await settle()


async def settle() -> None:
    """Let every task run until none has anything left to do without the clock moving."""
    for _ in range(200):
        await asyncio.sleep(0)


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


class Model:
    """A `run_batch` that doubles numbers, records its batches and fails on "boom"; `gate`, when set
    up, holds every batch until the test opens it."""

    def __init__(self) -> None:
        self.batches: list[list[object]] = []
        self.gate: asyncio.Event | None = None

    async def __call__(self, payloads: list[object]) -> list[object]:
        self.batches.append(list(payloads))
        if self.gate is not None:
            await self.gate.wait()
        if "boom" in payloads:
            raise ValueError("model failed")
        return [p * 2 for p in payloads]


def run(scenario: Callable[[], object]) -> None:
    """Run a scenario; the bound only turns a batcher that never answers into a failure, not a hang."""
    asyncio.run(asyncio.wait_for(scenario(), timeout=60))


def test_many_concurrent_submits_each_get_their_own_result():
    async def scenario():
        clock, model, reports = FakeClock(), Model(), []
        config = BatcherConfig(max_batch_size=8, preferred_batch_size=(4, 8), priority_levels=2,
                               length_buckets=(16,))
        batcher = DynamicBatcher(config, model, clock=clock, on_batch=reports.append)
        tasks = [asyncio.create_task(batcher.submit(i, length=5 if i % 3 else 50, priority=1 + i % 2))
                 for i in range(203)]
        await settle()
        assert sum(not t.done() for t in tasks) > 0  # the leftovers wait for the delay
        await clock.advance(2000)
        assert [t.result() for t in tasks] == [2 * i for i in range(203)]
        assert all(len(batch) <= 8 for batch in model.batches)
        assert all(len({p % 3 == 0 for p in batch}) == 1 for batch in model.batches)  # one length group
        assert sorted(p for batch in model.batches for p in batch) == list(range(203))
        assert [report.requests for report in reports] == [len(batch) for batch in model.batches]
        await batcher.close()

    run(scenario)


def test_driver_waits_for_the_delay_and_reports_each_batch():
    async def scenario():
        clock, model, reports = FakeClock(), Model(), []
        batcher = DynamicBatcher(BatcherConfig(max_batch_size=8, max_queue_delay_microseconds=1000),
                                 model, clock=clock, on_batch=reports.append)
        first = asyncio.create_task(batcher.submit(1, size=2))
        await clock.advance(400)
        second = asyncio.create_task(batcher.submit(2))
        await settle()
        assert (batcher.queued_requests, batcher.queued_rows, batcher.capacity) == (2, 3, 1024)
        await clock.advance(599)
        assert model.batches == []
        await clock.advance(1)
        assert (await first, await second) == (2, 4)
        assert reports == [BatchReport(rows=3, requests=2, queue_seconds=(0.001, 0.0006))]
        assert (batcher.queued_requests, batcher.queued_rows) == (0, 0)
        await batcher.close()

    run(scenario)


def test_failing_batch_fails_only_its_own_requests_and_the_worker_goes_on():
    async def scenario():
        clock, model = FakeClock(), Model()
        batcher = DynamicBatcher(BatcherConfig(max_batch_size=2), model, clock=clock)
        tasks = [asyncio.create_task(batcher.submit(p)) for p in ("a", "boom", "c", "d")]
        await until(lambda: all(t.done() for t in tasks))
        assert isinstance(tasks[0].exception(), ValueError) and isinstance(tasks[1].exception(), ValueError)
        assert (tasks[2].result(), tasks[3].result()) == ("cc", "dd")
        later = asyncio.create_task(batcher.submit("e"))
        await clock.advance(2000)
        assert await later == "ee"
        await batcher.close()

    run(scenario)


def test_cancelled_submit_never_reaches_the_model_and_frees_its_slot():
    async def scenario():
        clock, model = FakeClock(), Model()
        model.gate = asyncio.Event()
        batcher = DynamicBatcher(BatcherConfig(max_batch_size=1, max_queue_size=1), model, clock=clock)
        running = asyncio.create_task(batcher.submit(1))
        await until(lambda: len(model.batches) == 1)  # the worker is busy with [1]
        gone = asyncio.create_task(batcher.submit(3))
        await settle()
        assert batcher.queued_requests == 1
        gone.cancel()
        await settle()
        assert gone.cancelled() and batcher.queued_requests == 0
        kept = asyncio.create_task(batcher.submit(4))  # the slot is free again
        await settle()
        model.gate.set()
        assert (await running, await kept) == (2, 8)
        assert model.batches == [[1], [4]]
        await batcher.close()

    run(scenario)


def test_driver_refuses_a_full_queue_and_rejects_timed_out_requests():
    async def scenario():
        clock, model = FakeClock(), Model()
        config = BatcherConfig(max_queue_delay_microseconds=10_000, max_queue_size=1,
                               default_timeout_microseconds=500)
        batcher = DynamicBatcher(config, model, clock=clock)
        waiting = asyncio.create_task(batcher.submit(1))
        await settle()
        with pytest.raises(QueueFull):
            await batcher.submit(2)
        await clock.advance(499)
        assert not waiting.done()
        await clock.advance(1)
        with pytest.raises(QueueTimeout):
            await waiting
        assert model.batches == []
        await batcher.close()

    run(scenario)


def test_close_runs_everything_queued_without_waiting_out_the_delay_then_refuses_new_work():
    async def scenario():
        clock, model = FakeClock(), Model()
        config = BatcherConfig(max_batch_size=2, max_queue_delay_microseconds=10**9)
        batcher = DynamicBatcher(config, model, clock=clock)
        tasks = [asyncio.create_task(batcher.submit(i)) for i in range(5)]
        await settle()
        assert sum(t.done() for t in tasks) == 4  # two full batches; the fifth waits for the delay
        await batcher.close()
        assert [t.result() for t in tasks] == [0, 2, 4, 6, 8]
        with pytest.raises(ShuttingDown):
            await batcher.submit(9)

    run(scenario)


def test_run_batch_that_returns_the_wrong_number_of_results_fails_its_batch():
    async def scenario():
        async def short(payloads):
            return payloads[:-1]

        batcher = DynamicBatcher(BatcherConfig(max_batch_size=2), short, clock=FakeClock())
        tasks = [asyncio.create_task(batcher.submit(p)) for p in (1, 2)]
        await settle()
        assert all("returned 1 results for 2 requests" in str(t.exception()) for t in tasks)
        await batcher.close()

    run(scenario)


def test_default_monotonic_clock_sends_a_partial_batch_once_its_delay_is_over():
    async def scenario():
        model = Model()
        async with DynamicBatcher(BatcherConfig(max_queue_delay_microseconds=1000), model) as batcher:
            assert await asyncio.gather(*(batcher.submit(i) for i in range(3))) == [0, 2, 4]
        assert model.batches == [[0, 1, 2]]

    run(scenario)
