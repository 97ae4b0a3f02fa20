"""Dynamic batching of single-pass requests (classification, NER, embeddings, scoring).

A forward pass over 32 rows costs little more than over one, so the server holds requests for a
moment and runs them together. This module reimplements Triton's dynamic batcher
(server:docs/user_guide/batcher.md, core:src/dynamic_batch_scheduler.cc), with its config field
names so that a `config.pbtxt` can be written from the same settings:

- Requests are taken in arrival order within a priority level, higher levels first (level 1 is
  the highest; a request's priority 0 or one outside 1..priority_levels means the default level).
- If the queued requests form one of the preferred sizes, the largest one formed is sent; if the
  next request would push the batch past the largest preferred size (or past max_batch_size when
  none is given) the batch cannot grow towards one and is sent as it is. A request is never split,
  and a batch never holds more than max_batch_size rows.
- Otherwise the batch waits while its oldest request has waited less than
  max_queue_delay_microseconds; once it has, everything that fits goes. An arrival that completes
  a preferred or a full batch sends it at once, since every decision is taken again on each call.
- A request still queued when its timeout has elapsed is rejected (REJECT) or moved behind the
  unexpired requests of its level (DELAY), so it runs after every unexpired request of its own and
  the higher levels. A request may shorten the default timeout, never lengthen it.
- Each priority level holds at most max_queue_size requests; a push beyond that is refused, which
  the server answers with 503 and Retry-After rather than letting latency grow without bound.

One rule Triton does not have: batches are grouped by length. The server pads every row of a
batch to its longest row, so a 5-token request next to a 500-token one costs 100 times its own
work. `length_buckets` are upper bounds on a request's length in tokens; a request belongs to the
first bucket whose bound is at least its length (longer than the last bound: a bucket of its own
above it). A batch is formed only from the bucket of the oldest request of the highest waiting
priority level; requests of other buckets are stepped over, not taken, and keep their place. That
oldest request is therefore always in the next batch, so no request waits behind a stream of later
ones of another length. With the default bounds (powers of two) a row is padded to less than twice
its own length, except rows of up to 16 tokens and beyond 2048.

`BatchQueue` holds the rules and no clock: every call is given the time (integer microseconds, the
unit of Triton's settings), so the rules are tested by passing numbers. `DynamicBatcher` drives it
under asyncio: callers `await submit(...)`, one worker sends batches to `run_batch`, and time comes
from a clock object that tests replace with one they advance by hand.
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pydantic import Field, model_validator

from lmforge.config import Config
from lmforge.errors import LmforgeError


class BatcherError(LmforgeError):
    """A request the batcher cannot take or finish; the subclass says which answer the client gets."""


class QueueFull(BatcherError):
    """The request's priority level already holds max_queue_size requests (answer 503 + Retry-After)."""


class QueueTimeout(BatcherError):
    """The request waited longer than its timeout and timeout_action is REJECT (Triton: UNAVAILABLE)."""


class ShuttingDown(BatcherError):
    """The batcher is draining for shutdown and takes no new requests (answer 503)."""


class InvalidRequest(BatcherError):
    """A request that no batch could ever hold, e.g. more rows than max_batch_size (answer 400)."""


class BatcherConfig(Config):
    """Triton's `dynamic_batching` settings (plus `max_batch_size`), with Triton's names and meanings,
    and `length_buckets`, which Triton does not have. Defaults differ where Triton's suit a model
    repository rather than a server of its own: a 2 ms delay (Triton: 0), a bounded queue (Triton:
    unbounded), timeout overrides allowed (Triton: not), one priority level (Triton: 0 = one queue).
    """

    max_batch_size: int = Field(64, ge=1)
    """Most rows in one batch; a request of several rows counts each of them."""
    preferred_batch_size: tuple[int, ...] = ()
    """Batch sizes (rows) to send as soon as they can be formed; empty: as large as possible up to
    max_batch_size. Triton's docs advise against them for most models."""
    max_queue_delay_microseconds: int = Field(2000, ge=0)
    """How long the oldest request of a batch that is neither preferred nor full may wait for others."""
    max_queue_size: int = Field(1024, ge=0)
    """Most requests waiting at each priority level; 0 = unbounded."""
    default_timeout_microseconds: int = Field(0, ge=0)
    """How long a request may wait in the queue before timeout_action applies; 0 = no timeout."""
    timeout_action: Literal["REJECT", "DELAY"] = "REJECT"
    """REJECT: fail a timed-out request; DELAY: run it after every unexpired request of its level
    and the higher ones."""
    allow_timeout_override: bool = True
    """Let a request ask for a shorter timeout than the default (never a longer one)."""
    priority_levels: int = Field(1, ge=1)
    """Number of priority levels; level 1 is served first."""
    default_priority_level: int = Field(0, ge=0)
    """Level of requests that give no priority (or one out of range); 0 = the lowest, priority_levels."""
    length_buckets: tuple[int, ...] = (16, 32, 64, 128, 256, 512, 1024, 2048)
    """Upper bounds (tokens) of the length groups a batch is formed from, so that short rows are not
    padded to long ones; lengths above the last bound form one more group. Empty: one group."""

    @model_validator(mode="after")
    def _consistent(self) -> BatcherConfig:
        too_big = [size for size in self.preferred_batch_size if not 1 <= size <= self.max_batch_size]
        if too_big:
            raise ValueError(f"preferred_batch_size {too_big} must lie in "
                             f"1..max_batch_size={self.max_batch_size}")
        if self.default_priority_level > self.priority_levels:
            raise ValueError(f"default_priority_level={self.default_priority_level} must lie in "
                             f"0..priority_levels={self.priority_levels}")
        bounds = self.length_buckets
        if list(bounds) != sorted(set(bounds)) or any(bound < 1 for bound in bounds):
            raise ValueError(f"length_buckets {list(bounds)} must be positive and strictly increasing")
        return self


@dataclass(eq=False)
class Request:
    """One queued request: `size` rows of at most `length` tokens each. `priority` and `timeout_us`
    are what the client asked for; `level`, `enqueued` and `deadline` are what `push` made of them.
    Compared by identity, so that the same payload sent twice is two requests."""

    payload: Any
    size: int = 1
    length: int = 0
    priority: int = 0
    timeout_us: int = 0
    level: int = field(default=0, init=False)
    enqueued: int = field(default=0, init=False)
    deadline: int | None = field(default=None, init=False)


class BatchQueue:
    """The batching rules over a queue of `Request`s, with the time passed in (integer microseconds)
    to every call: no clock, no threads, no asyncio."""

    def __init__(self, config: BatcherConfig):
        self.config = config
        self._preferred = frozenset(config.preferred_batch_size)
        self._target = max(config.preferred_batch_size, default=config.max_batch_size)
        self._default_level = config.default_priority_level or config.priority_levels
        # Per level: (waiting in arrival order, delayed by timeout_action DELAY); dicts as ordered sets.
        self._levels: list[tuple[dict[Request, None], dict[Request, None]]] = [
            ({}, {}) for _ in range(config.priority_levels)
        ]
        self._rejected: list[Request] = []

    @property
    def requests(self) -> int:
        """Requests waiting (timed-out ones not yet collected by `expire` excluded)."""
        return sum(len(waiting) + len(delayed) for waiting, delayed in self._levels)

    @property
    def rows(self) -> int:
        """Rows of the waiting requests."""
        return sum(request.size for request in self._in_order())

    @property
    def capacity(self) -> int | None:
        """Requests that can wait at once over all levels; None when unbounded."""
        return self.config.max_queue_size * self.config.priority_levels or None

    def push(self, request: Request, now: int) -> None:
        """Queue `request`; raise QueueFull when its level is full, InvalidRequest when no batch could
        ever hold it."""
        if not 1 <= request.size <= self.config.max_batch_size:
            raise InvalidRequest(f"a request of {request.size} rows cannot be batched: "
                                 f"1..max_batch_size={self.config.max_batch_size} rows per request")
        if request.length < 0:
            raise InvalidRequest(f"a request cannot be {request.length} tokens long")
        self._apply_timeouts(now)
        in_range = 1 <= request.priority <= self.config.priority_levels
        request.level = request.priority if in_range else self._default_level
        waiting, delayed = self._levels[request.level - 1]
        limit = self.config.max_queue_size
        if limit and len(waiting) + len(delayed) >= limit:
            raise QueueFull(f"queue full: {limit} requests already wait at priority level {request.level} "
                            f"(max_queue_size={limit})")
        request.enqueued = now
        timeout = self._timeout(request.timeout_us)
        request.deadline = now + timeout if timeout else None
        waiting[request] = None

    def remove(self, request: Request) -> bool:
        """Take a queued request out (its client went away); False if it is no longer queued."""
        if request.level == 0:
            return False
        for part in self._levels[request.level - 1]:
            if request in part:
                del part[request]
                return True
        return False

    def expire(self, now: int) -> list[Request]:
        """The requests rejected for their timeout since the last call; the caller fails them."""
        self._apply_timeouts(now)
        rejected, self._rejected = self._rejected, []
        return rejected

    def next_batch(self, now: int, flush: bool = False) -> list[Request] | None:
        """The requests to run now, taken out of the queue, or None to wait. `flush` treats every
        delay as expired: when no more requests can arrive (shutdown), waiting gains nothing."""
        batch, _ = self._plan(now, flush)
        for request in batch or ():
            self.remove(request)
        return batch

    def wake_at(self, now: int) -> int | None:
        """When `next_batch` or `expire` may answer differently without a new push: `now` if they
        already would, the end of the delay or the first timeout otherwise; None for an empty queue."""
        batch, wake = self._plan(now, flush=False)
        return now if batch or self._rejected else wake

    def _timeout(self, requested_us: int) -> int:
        """Triton's rule, except that with no default timeout any requested one counts as shorter."""
        default = self.config.default_timeout_microseconds
        shorter = requested_us > 0 and (default == 0 or requested_us < default)
        return requested_us if self.config.allow_timeout_override and shorter else default

    def _in_order(self) -> Iterator[Request]:
        """Every queued request in the order batches take them."""
        for waiting, delayed in self._levels:
            yield from waiting
            yield from delayed

    def _bucket(self, length: int) -> int:
        return bisect_left(self.config.length_buckets, length)

    def _apply_timeouts(self, now: int) -> None:
        for waiting, delayed in self._levels:
            expired = [r for r in waiting if r.deadline is not None and now >= r.deadline]
            for request in expired:
                del waiting[request]
                if self.config.timeout_action == "DELAY":
                    delayed[request] = None
                else:
                    self._rejected.append(request)

    def _plan(self, now: int, flush: bool) -> tuple[list[Request] | None, int | None]:
        """(batch to send now, None) or (None, time to look again)."""
        self._apply_timeouts(now)
        head = next(self._in_order(), None)
        if head is None:
            return None, None
        bucket = self._bucket(head.length)
        taken: list[Request] = []
        rows = mark = 0  # mark: how many of `taken` make the batch to send before the delay expires
        full = False
        for request in self._in_order():
            if self._bucket(request.length) != bucket:
                continue
            if rows + request.size > self.config.max_batch_size:
                full = True
                break
            if taken and mark == 0 and rows + request.size > self._target:
                mark = len(taken)
            taken.append(request)
            rows += request.size
            if rows in self._preferred:
                mark = len(taken)
        delay = self.config.max_queue_delay_microseconds
        oldest = min(request.enqueued for request in taken)
        delay_expired = flush or (delay > 0 and now >= oldest + delay)
        if mark and not delay_expired:
            return taken[:mark], None
        if full or rows >= self._target or delay_expired or delay == 0:
            return taken, None
        deadlines = [r.deadline for waiting, _ in self._levels for r in waiting if r.deadline is not None]
        return None, min([oldest + delay, *deadlines])


class Clock(Protocol):
    """Where the batcher reads the time (integer microseconds) and waits for it."""

    def now(self) -> int: ...

    async def sleep_until(self, t: int) -> None: ...


class MonotonicClock:
    """The real clock: `time.monotonic_ns` in microseconds."""

    def now(self) -> int:
        return time.monotonic_ns() // 1000

    async def sleep_until(self, t: int) -> None:
        # asyncio may wake a timer up to its clock resolution early; sleep again for the rest.
        while (left := t - self.now()) > 0:
            await asyncio.sleep(left / 1e6)


@dataclass(frozen=True)
class BatchReport:
    """What the metrics see of one batch sent to the model."""

    rows: int
    requests: int
    queue_seconds: tuple[float, ...]
    """How long each request of the batch waited in the queue."""


class DynamicBatcher:
    """`BatchQueue` under asyncio: `await submit(payload, ...)` returns that payload's result.

    One worker task (started by the first submit) sends batches to `run_batch(payloads) -> results`,
    one result per payload in the same order; the server runs the model in a thread inside it, so
    requests keep queueing while a batch runs. An exception from `run_batch` (or `on_batch`) fails
    the requests of that batch only. A submit cancelled while its request is queued (the client
    disconnected) takes the request out: it frees its slot and never runs.
    """

    def __init__(self, config: BatcherConfig, run_batch: Callable[[list[Any]], Awaitable[list[Any]]],
                 clock: Clock | None = None, on_batch: Callable[[BatchReport], None] | None = None):
        self.queue = BatchQueue(config)
        self._run_batch = run_batch
        self._clock = clock or MonotonicClock()
        self._on_batch = on_batch
        self._futures: dict[Request, asyncio.Future[Any]] = {}
        self._wakeup = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def queued_requests(self) -> int:
        return self.queue.requests

    @property
    def queued_rows(self) -> int:
        return self.queue.rows

    @property
    def capacity(self) -> int | None:
        """Requests that can wait at once (over all priority levels); None when unbounded."""
        return self.queue.capacity

    async def submit(self, payload: Any, size: int = 1, length: int = 0, priority: int = 0,
                     timeout_us: int = 0) -> Any:
        """Queue `payload` (`size` rows of at most `length` tokens) and return its result. Raises
        QueueFull, InvalidRequest or ShuttingDown at once, QueueTimeout when it times out (REJECT),
        or whatever `run_batch` raised for its batch."""
        if self._closing:
            raise ShuttingDown("the server is shutting down and takes no new requests")
        request = Request(payload, size, length, priority, timeout_us)
        self.queue.push(request, self._clock.now())
        future = asyncio.get_running_loop().create_future()
        self._futures[request] = future
        if self._worker is None:
            self._worker = asyncio.create_task(self._work())
        self._wakeup.set()
        try:
            return await future
        except asyncio.CancelledError:
            self.queue.remove(request)
            self._futures.pop(request, None)
            raise

    async def close(self) -> None:
        """Take no new requests, run every queued one (without waiting out the delay), then stop."""
        self._closing = True
        self._wakeup.set()
        if self._worker is not None:
            await self._worker

    async def __aenter__(self) -> DynamicBatcher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _work(self) -> None:
        while True:
            now = self._clock.now()
            for request in self.queue.expire(now):
                waited = (now - request.enqueued) / 1e6
                self._settle(request, error=QueueTimeout(f"timed out after {waited:.6f} s in the queue"))
            batch = self.queue.next_batch(now, flush=self._closing)
            if batch is not None:
                await self._execute(batch, now)
                continue
            if self._closing and not self.queue.requests:
                return
            wake = self.queue.wake_at(now)
            self._wakeup.clear()
            await self._wait(wake)

    async def _wait(self, wake: int | None) -> None:
        """Until a push (or close) sets the wake-up event or the clock reaches `wake`."""
        waiters = [asyncio.ensure_future(self._wakeup.wait())]
        if wake is not None:
            waiters.append(asyncio.ensure_future(self._clock.sleep_until(wake)))
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _execute(self, batch: list[Request], now: int) -> None:
        try:
            if self._on_batch is not None:
                queue_seconds = tuple((now - request.enqueued) / 1e6 for request in batch)
                self._on_batch(BatchReport(sum(r.size for r in batch), len(batch), queue_seconds))
            results = await self._run_batch([request.payload for request in batch])
            if len(results) != len(batch):
                raise BatcherError(f"run_batch returned {len(results)} results for {len(batch)} requests")
        except Exception as err:  # the batch's requests carry it to their clients; the worker goes on
            for request in batch:
                self._settle(request, error=err)
            return
        for request, result in zip(batch, results, strict=True):
            self._settle(request, result=result)

    def _settle(self, request: Request, result: Any = None, error: BaseException | None = None) -> None:
        """Hand the outcome to the request's submit, unless that submit was cancelled meanwhile."""
        future = self._futures.pop(request, None)
        if future is None or future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
