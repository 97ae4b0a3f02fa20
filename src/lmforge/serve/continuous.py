"""Continuous (iteration-level) batching of generation, as in Orca and vLLM.

Requests generate different numbers of tokens, so batching whole requests leaves the batch
waiting on its longest member. Here the batch is re-formed at every decoding step: waiting
sequences join as soon as a slot is free (their prompt is read when they join, through the prefix
cache when there is one) and finished ones leave at once. One forward per step decodes every
running sequence: each row's memory (the KV cache, `window - 1` positions at most) is left-padded
to the longest and masked, so a row computes what it would alone (`Transformer.forward`'s
[B, M+T] padding mask). Each sequence samples with its own parameters and its own seeded
`torch.Generator` through `sample_token`, so its tokens equal `generate(...)` run for it alone,
whatever runs beside it (up to float rounding in the batched forward).

`GenerationBatch` is the synchronous core: `add`, `cancel`, `step`, deterministic, no clock but
the one it is given. `ContinuousBatcher` drives it under asyncio: `stream()` returns an async
iterator of a sequence's tokens, each step runs in a worker thread so the event loop stays free,
and closing or cancelling a stream frees its slot at the next step.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from lmforge.model.generate import check_sampling, sample_token
from lmforge.model.xl import Transformer
from lmforge.serve.batcher import InvalidRequest, QueueFull, ShuttingDown
from lmforge.serve.prefix_cache import PrefixCache, prefill_cached

FinishReason = Literal["length", "stop", "cancelled"]


@dataclass(frozen=True)
class SamplingParams:
    """How one sequence is continued; the meanings of `generate`'s arguments."""

    max_new_tokens: int = 16
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    """None: a generator seeded at random, still the sequence's own."""
    eos_id: int | None = None
    stop_ids: frozenset[int] = frozenset()
    """Tokens that end the sequence like eos: never emitted."""


class Token(NamedTuple):
    seq_id: int
    token: int


class Finished(NamedTuple):
    seq_id: int
    reason: FinishReason


Event = Token | Finished


@dataclass(frozen=True)
class StepReport:
    """What the metrics see of one step."""

    running: int
    """Sequences in the batch after the step."""
    waiting: int
    tokens: int
    """Tokens emitted by the step."""
    queue_seconds: tuple[float, ...]
    """How long each sequence that joined in this step had waited."""
    first_token_seconds: tuple[float, ...]
    """Time from `add` to the first token, for each sequence that emitted its first token."""


@dataclass(eq=False)
class _Sequence:
    seq_id: int
    prompt: list[int]
    params: SamplingParams
    generator: torch.Generator
    added: float
    emitted: int = 0
    last: int = -1
    """The last token emitted: the next decoding step's input."""


class GenerationBatch:
    """The running batch and its waiting queue; `step()` advances every running sequence by one token.

    `add` and `cancel` may be called from another thread while `step` runs (the asyncio driver
    does); they take effect at the next step. Steps themselves must not overlap. The model is put
    in eval mode: the server never trains it.
    """

    def __init__(self, model: Transformer, *, max_running: int = 16, max_waiting: int = 0,
                 prefix_cache: PrefixCache | None = None, on_step: Callable[[StepReport], None] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.model = model.eval()
        self.max_running = max_running
        self.max_waiting = max_waiting
        """0: unbounded."""
        self.prefix_cache = prefix_cache
        self._on_step = on_step
        self._clock = clock
        self._device = model.tok_emb.weight.device
        self._window = model.config.context_len
        self._lock = threading.Lock()  # guards _waiting, _cancelled and _next_id
        self._waiting: deque[_Sequence] = deque()
        self._cancelled: set[int] = set()
        self._next_id = 0
        self._running: list[_Sequence] = []
        self._mems: list[Tensor] = []
        """Per layer [running, width, D]: row i holds _lengths[i] memory positions at the right."""
        self._lengths: list[int] = []

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def waiting(self) -> int:
        with self._lock:
            return len(self._waiting)

    @property
    def idle(self) -> bool:
        return not self._running and not self.waiting

    def add(self, prompt: list[int], params: SamplingParams) -> int:
        """Queue a sequence; returns its id. Raises InvalidRequest or QueueFull at once."""
        _validate(prompt, params, self.model.config.vocab_size)
        generator = torch.Generator(self._device)
        if params.seed is None:
            generator.seed()
        else:
            generator.manual_seed(params.seed)
        with self._lock:
            if self.max_waiting and len(self._waiting) >= self.max_waiting:
                raise QueueFull(f"{len(self._waiting)} generation requests already wait for a slot")
            seq_id, self._next_id = self._next_id, self._next_id + 1
            self._waiting.append(_Sequence(seq_id, list(prompt), params, generator, self._clock()))
        return seq_id

    def cancel(self, seq_id: int) -> None:
        """End the sequence at the next step (Finished 'cancelled'); unknown or finished ids are ignored."""
        with self._lock:
            self._cancelled.add(seq_id)

    @torch.no_grad()
    def step(self) -> list[Event]:
        """Drop cancelled sequences, decode one token for every running sequence, then admit
        waiting ones into the free slots (each emits its first token). A sequence leaves in the
        step that emits its last token."""
        events: list[Event] = self._drop_cancelled()
        firsts: list[_Sequence] = []
        if self._running:
            self._decode(events, firsts)
        queue_seconds = self._admit(events, firsts)
        if self._on_step is not None:
            now = self._clock()
            self._on_step(StepReport(
                running=len(self._running), waiting=self.waiting,
                tokens=sum(isinstance(event, Token) for event in events),
                queue_seconds=tuple(queue_seconds),
                first_token_seconds=tuple(now - seq.added for seq in firsts)))
        return events

    def _drop_cancelled(self) -> list[Event]:
        with self._lock:
            cancelled, self._cancelled = self._cancelled, set()
            waiting = [seq for seq in self._waiting if seq.seq_id in cancelled]
            self._waiting = deque(seq for seq in self._waiting if seq.seq_id not in cancelled)
        rows = [row for row, seq in enumerate(self._running) if seq.seq_id in cancelled]
        gone = waiting + [self._running[row] for row in rows]
        self._leave(rows)
        return [Finished(seq.seq_id, "cancelled") for seq in gone]

    def _decode(self, events: list[Event], firsts: list[_Sequence]) -> None:
        """One forward of every running sequence's last token over its left-padded memory."""
        width = self._mems[0].size(1) if self._mems else 0
        lengths = torch.tensor(self._lengths, device=self._device)
        real = torch.arange(width, device=self._device)[None, :] >= width - lengths[:, None]
        idx = torch.tensor([[seq.last] for seq in self._running], device=self._device)
        out = self.model(idx, self._mems, padding_mask=F.pad(real, (0, 1), value=True),
                         mem_len=self._window - 1)
        self._mems = out.mems
        self._lengths = [min(n + 1, self._window - 1) for n in self._lengths]
        done = [row for row, seq in enumerate(self._running)
                if self._emit(seq, out.logits[row, -1], events, firsts)]
        self._leave(done)

    def _admit(self, events: list[Event], firsts: list[_Sequence]) -> list[float]:
        """Prefill waiting sequences into the free slots; returns how long each had waited."""
        waited = []
        while len(self._running) < self.max_running:
            with self._lock:
                if not self._waiting:
                    break
                seq = self._waiting.popleft()
            waited.append(self._clock() - seq.added)
            mems, logits = prefill_cached(self.model, seq.prompt, self.prefix_cache)
            if not self._emit(seq, logits, events, firsts):
                self._join(seq, mems)
        return waited

    def _emit(self, seq: _Sequence, logits: Tensor, events: list[Event], firsts: list[_Sequence]) -> bool:
        """Sample the sequence's next token from its [V] logits; True when the sequence is finished."""
        params = seq.params
        token = sample_token(logits, params.temperature, params.top_k, params.top_p, seq.generator)
        if token == params.eos_id or token in params.stop_ids:
            events.append(Finished(seq.seq_id, "stop"))
            return True
        events.append(Token(seq.seq_id, token))
        if not seq.emitted:
            firsts.append(seq)
        seq.emitted += 1
        seq.last = token
        if seq.emitted == params.max_new_tokens:
            events.append(Finished(seq.seq_id, "length"))
            return True
        return False

    def _join(self, seq: _Sequence, mems: list[Tensor]) -> None:
        """Append a row: its memory and the batch's, left-padded to the longer of the two."""
        length = mems[0].size(1) if mems else 0
        if not self._running:
            self._mems = mems
        else:
            width = max(self._mems[0].size(1), length)
            self._mems = [torch.cat([_left_pad(batch, width), _left_pad(own, width)])
                          for batch, own in zip(self._mems, mems, strict=True)]
        self._running.append(seq)
        self._lengths.append(length)

    def _leave(self, rows: list[int]) -> None:
        """Remove rows, and the padding columns no remaining row needs."""
        if not rows:
            return
        keep = [row for row in range(len(self._running)) if row not in rows]
        self._running = [self._running[row] for row in keep]
        self._lengths = [self._lengths[row] for row in keep]
        if not keep:
            self._mems = []
            return
        index = torch.tensor(keep, device=self._device)
        width = max(self._lengths)
        self._mems = [m[index, m.size(1) - width :] for m in self._mems]


def _left_pad(mem: Tensor, width: int) -> Tensor:
    return F.pad(mem, (0, 0, width - mem.size(1), 0))


def _validate(prompt: list[int], params: SamplingParams, vocab_size: int) -> None:
    if not prompt:
        raise InvalidRequest("a generation request needs a non-empty prompt")
    if params.max_new_tokens < 1:
        raise InvalidRequest(f"max_new_tokens must be at least 1; got {params.max_new_tokens}")
    bad = [t for t in prompt if not 0 <= t < vocab_size]
    if bad:
        raise InvalidRequest(f"prompt token ids must lie in 0..{vocab_size - 1}; got {bad[0]}")
    try:
        check_sampling(params.temperature, params.top_k, params.top_p)
    except ValueError as err:
        raise InvalidRequest(str(err)) from None


class TokenStream:
    """One sequence's tokens as an async iterator; `finish_reason` once it has ended.

    `aclose()` (or cancelling the task that waits on it) cancels the sequence, which leaves the
    batch at the next step. A stream dropped without either runs until it finishes.
    """

    def __init__(self, seq_id: int, cancel: Callable[[int], None]):
        self.seq_id = seq_id
        self.finish_reason: FinishReason | None = None
        self._cancel = cancel
        self._queue: asyncio.Queue[Event | BaseException] = asyncio.Queue()
        self._failed = False

    def __aiter__(self) -> TokenStream:
        return self

    async def __anext__(self) -> int:
        if self.finish_reason is not None or self._failed:
            raise StopAsyncIteration
        try:
            item = await self._queue.get()
        except asyncio.CancelledError:
            await self.aclose()
            raise
        if isinstance(item, BaseException):
            self._failed = True
            raise item
        if isinstance(item, Finished):
            self.finish_reason = item.reason
            raise StopAsyncIteration
        return item.token

    def push(self, item: Event | BaseException) -> None:
        """The driver's side: the sequence's next event, or the error that ended generation."""
        self._queue.put_nowait(item)

    async def aclose(self) -> None:
        if self.finish_reason is None and not self._failed:
            self.finish_reason = "cancelled"
            self._cancel(self.seq_id)


class ContinuousBatcher:
    """`GenerationBatch` under asyncio. One driver task (started by the first `stream`) runs steps
    in a worker thread while there is work and hands each event to its stream. If a step raises,
    every open stream raises that error and the batcher takes no more sequences.

    `max_waiting` bounds the sequences waiting for a slot (0: unbounded); `on_step` is called in
    the worker thread after every step.
    """

    def __init__(self, model: Transformer, *, max_running: int = 16, max_waiting: int = 0,
                 prefix_cache: PrefixCache | None = None, on_step: Callable[[StepReport], None] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.batch = GenerationBatch(model, max_running=max_running, max_waiting=max_waiting,
                                     prefix_cache=prefix_cache, on_step=on_step, clock=clock)
        self._streams: dict[int, TokenStream] = {}
        self._wakeup = asyncio.Event()
        self._driver: asyncio.Task[None] | None = None
        self._closing = False
        self._failed = False

    def stream(self, prompt: list[int], params: SamplingParams) -> TokenStream:
        """Queue a sequence and return its token stream. Raises InvalidRequest, QueueFull or
        ShuttingDown at once, before any token."""
        if self._closing:
            raise ShuttingDown("the server is shutting down and takes no new requests")
        if self._failed:
            raise ShuttingDown("generation stopped after an error and takes no new requests")
        seq_id = self.batch.add(prompt, params)
        stream = TokenStream(seq_id, self._cancel)
        self._streams[seq_id] = stream
        if self._driver is None:
            self._driver = asyncio.create_task(self._drive())
        self._wakeup.set()
        return stream

    async def close(self) -> None:
        """Take no new sequences, finish every running and waiting one, then stop the driver."""
        self._closing = True
        self._wakeup.set()
        if self._driver is not None:
            await self._driver

    async def __aenter__(self) -> ContinuousBatcher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _cancel(self, seq_id: int) -> None:
        self._streams.pop(seq_id, None)
        self.batch.cancel(seq_id)

    async def _drive(self) -> None:
        while True:
            if self.batch.idle:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            try:
                events = await asyncio.to_thread(self.batch.step)
            except Exception as err:  # noqa: BLE001 - every open stream carries the error to its client
                self._failed = True
                for stream in self._streams.values():
                    stream.push(err)
                self._streams.clear()
                return
            for event in events:
                stream = self._streams.get(event.seq_id)
                if stream is not None:
                    stream.push(event)
                if isinstance(event, Finished):
                    self._streams.pop(event.seq_id, None)
