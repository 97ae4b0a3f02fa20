"""The models a server runs, each in a `Slot` with its batchers, and their hot swap.

A slot is one loaded model version: a dynamic batcher per task head and, when the model has an LM
head on the eager backbone, a continuous batcher for generation. Loading a new version builds and
warms a whole new slot beside the old one (requests keep flowing to the old one meanwhile), then
replaces it in one assignment; the old slot stops taking requests and finishes everything it had
queued. A request that reached the old slot just as it closed (`ShuttingDown`) is retried on the
new one (`Registry.call`), so a swap fails no request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from tokenizers import Tokenizer

from lmforge.artifacts import ArtifactError
from lmforge.serve.batcher import BatchReport, DynamicBatcher, ShuttingDown
from lmforge.serve.continuous import ContinuousBatcher, SamplingParams, TokenStream
from lmforge.serve.heads import encode_job, run_jobs
from lmforge.serve.metrics import ServerMetrics
from lmforge.serve.prefix_cache import PrefixCache
from lmforge.serve.runtime import ServedModel, open_model
from lmforge.serve.settings import ModelSpec, ServeSettings

T = TypeVar("T")


@dataclass
class Slot:
    model: ServedModel
    batchers: dict[str, DynamicBatcher] = field(default_factory=dict)
    """By head name."""
    generator: ContinuousBatcher | None = None

    async def close(self) -> None:
        """Take no new requests and finish the queued ones."""
        closing = [b.close() for b in self.batchers.values()]
        if self.generator is not None:
            closing.append(self.generator.close())
        await asyncio.gather(*closing)


class Registry:
    def __init__(self, settings: ServeSettings, metrics: ServerMetrics):
        self.settings = settings
        self.metrics = metrics
        self.slots: dict[str, Slot] = {}
        self._draining: set[asyncio.Task[None]] = set()

    def get(self, name: str) -> Slot:
        slot = self.slots.get(name)
        if slot is None:
            raise ArtifactError(f"no model named {name!r} (models: {', '.join(self.slots) or 'none'})")
        return slot

    async def load(self, spec: ModelSpec) -> Slot:
        """Open `spec` in a worker thread, warm it up, and make it the served version of its name."""
        model = await asyncio.to_thread(open_model, spec.path, spec.runtime, self.settings.device, spec.name)
        slot = self._slot(model)
        await self._warm_up(slot)
        old = self.slots.get(model.name)
        self.slots[model.name] = slot
        self.metrics.set_model(model.name, model.version, model.runtime)
        if old is not None:
            task = asyncio.create_task(old.close())
            self._draining.add(task)
            task.add_done_callback(self._draining.discard)
        return slot

    async def call(self, name: str, work: Callable[[Slot], Awaitable[T]]) -> T:
        """`work(slot)` on the served version of `name`, again on the new version if a swap closed
        the slot under it."""
        while True:
            slot = self.get(name)
            try:
                return await work(slot)
            except ShuttingDown:
                if self.slots.get(name) is slot:
                    raise

    def open_stream(self, name: str, ids: list[int], params: SamplingParams) -> tuple[Tokenizer, TokenStream]:
        """A generation stream on the served version of `name` (the new one if a swap closed the
        old under it), with the tokenizer that decodes it."""
        while True:
            slot = self.get(name)
            if slot.generator is None:
                raise ArtifactError(f"model {name!r} does not generate text "
                                    f"(no causal LM head on the eager runtime)")
            eos = slot.model.tokenizer.token_to_id("<eos>")  # documents end with it in pretraining
            try:
                return slot.model.tokenizer, slot.generator.stream(ids, replace(params, eos_id=eos))
            except ShuttingDown:
                if self.slots.get(name) is slot:
                    raise

    async def close(self) -> None:
        """Graceful shutdown: every slot finishes what it has queued."""
        await asyncio.gather(*(slot.close() for slot in self.slots.values()), *self._draining)

    def _slot(self, model: ServedModel) -> Slot:
        s = self.settings
        slot = Slot(model)
        for name, head in model.heads.items():
            slot.batchers[name] = DynamicBatcher(s.batcher, lambda jobs, head=head: run_jobs(head, jobs),
                                                 on_batch=self._on_batch(model.name, slot, name))
        if model.lm is not None:
            cache = PrefixCache(s.prefix_cache_bytes) if s.prefix_cache_bytes else None
            slot.generator = ContinuousBatcher(model.lm, max_running=s.max_running, max_waiting=s.max_waiting,
                                               prefix_cache=cache, on_step=self._on_step(model.name, cache))
        return slot

    def _on_batch(self, model: str, slot: Slot, head: str) -> Callable[[BatchReport], None]:
        def report(batch: BatchReport) -> None:
            self.metrics.observe_batch(model, batch.rows, batch.queue_seconds)
            queue = slot.batchers[head]
            self.metrics.set_queue(model, queue.queued_requests, queue.capacity or 0)
        return report

    def _on_step(self, model: str, cache: PrefixCache | None) -> Callable[[Any], None]:
        counted = {"hit": 0, "miss": 0}

        def report(step: Any) -> None:  # tokens counted as computed, whether or not a client read them
            self.metrics.set_running(model, step.running)
            self.metrics.observe_tokens(model, 0, step.tokens)
            if cache is not None:  # the cache counts its own look-ups; export what is new since the last step
                for result, total in (("hit", cache.hits), ("miss", cache.misses)):
                    self.metrics.observe_cache("prefix", result, total - counted[result])
                    counted[result] = total
            for seconds in step.first_token_seconds:
                self.metrics.observe_first_token(model, seconds)
        return report

    async def _warm_up(self, slot: Slot) -> None:
        """One request through every head and one generated token, so the first client does not pay
        for lazy initialisation (ready only after this)."""
        for name, head in slot.model.heads.items():
            await slot.batchers[name].submit(encode_job(slot.model, head, ["warm up"]))
        if slot.generator is not None:
            ids = slot.model.tokenizer.encode("warm up").ids or [0]
            async for _ in slot.generator.stream(ids, SamplingParams(max_new_tokens=1, temperature=0)):
                pass
