"""What the server does, whatever protocol asked: single-pass head work and text generation.

The OpenAI, KServe and native routes only translate bodies; the limits, the result cache, the
batchers and the hot-swap retry are applied here, once. A cached answer is keyed by the model's
version and runtime, the tokenizer, the token ids and every parameter that changes the output
(`result_cache.cache_key`), and only deterministic requests are cached. Cache calls run in a
worker thread: a Redis round trip (or its timeout, when Redis stalls) must not hold up the event
loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from lmforge.errors import LmforgeError
from lmforge.serve.assignment import assign
from lmforge.serve.continuous import SamplingParams
from lmforge.serve.heads import encode_job
from lmforge.serve.metrics import ServerMetrics
from lmforge.serve.registry import Registry, Slot
from lmforge.serve.request_log import pseudonym
from lmforge.serve.result_cache import ResultCache, cache_key, is_cacheable
from lmforge.serve.settings import ExperimentSpec, ServeSettings


class InvalidInput(LmforgeError):
    """A request the server will not run as sent (too long, too many inputs, bad parameters): 400."""


class RequestTimeout(LmforgeError):
    """A request that waited longer than `request_timeout_s`: 503, try again."""


@dataclass
class GenerationParams:
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)

    def key(self) -> dict[str, Any]:
        return {"max_tokens": self.max_tokens, "temperature": self.temperature, "top_p": self.top_p,
                "top_k": self.top_k, "seed": self.seed, "stop": self.stop}


@dataclass
class Completion:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


class Service:
    def __init__(self, settings: ServeSettings, registry: Registry, metrics: ServerMetrics,
                 cache: ResultCache | None, user_salt: str = ""):
        self.settings = settings
        self.registry = registry
        self.metrics = metrics
        self.cache = cache
        self.experiments = {e.name: e for e in settings.experiments}
        self.user_salt = user_salt

    def resolve(self, request: Any, model: str, texts: list[str]) -> str:
        """The served model that answers a request for `model`: itself, or under an A/B test the
        variant its `X-User-Id` is assigned to (404 naming the models when neither exists). It is
        recorded on the request for its metrics, whose labels only ever hold names of loaded
        models; `texts` are kept on it for the logs (anonymised before they are written)."""
        experiment = self.experiments.get(model)
        served = model if experiment is None else self._variant(request, experiment)
        self.registry.get(served)
        request.state.model = served
        request.state.logged_text = " | ".join(texts)
        return served

    def _variant(self, request: Any, experiment: ExperimentSpec) -> str:
        """GrowthBook's assignment of the request's user; the control, uncounted, without one."""
        user = request.headers.get("x-user-id", "")
        index = assign(experiment.name, user, experiment.weights, experiment.coverage, experiment.seed)
        if index is None:
            return experiment.variants[0].model
        request.state.experiment = experiment.name
        request.state.variant = experiment.variants[index].model
        request.state.user = pseudonym(user, self.user_salt)
        return request.state.variant

    def answered(self, request: Any, task: str, texts: list[str], results: list[dict[str, Any]],
                 head: str | None = None) -> list[str]:
        """Note a request's answers for the request log; their ids (one per input), which clients
        quote in `/v1/feedback`."""
        base = request.state.request_id
        ids = [base] if len(texts) == 1 else [f"{base}-{i}" for i in range(len(texts))]
        request.state.answers = (task, head, texts, results, ids)
        return ids

    async def single_pass(self, model: str, task: str, texts: list[str], head: str | None = None,
                          priority: int = 0, timeout_us: int = 0) -> list[dict[str, Any]]:
        """Run `texts` through `model`'s `task` head (one batcher request of len(texts) rows);
        `priority` and `timeout_us` (time allowed in the queue) are Triton's schedule policy."""
        self._check_texts(texts)
        slot = self.registry.get(model)
        name = slot.model.head(task, head).name
        job = encode_job(slot.model, slot.model.heads[name], texts)
        key = self._key(slot, f"{task}:{name}", job.rows, {})  # token ids: what the model will see
        if key is not None and (hit := await asyncio.to_thread(self.cache.get, key)) is not None:
            return hit["results"]

        served_by: list[Slot] = []

        async def work(current: Slot) -> list[dict[str, Any]]:
            served_by.append(current)
            ready = job if current is slot else encode_job(current.model, current.model.heads[name], texts)
            return await current.batchers[name].submit(ready, size=len(texts), length=ready.longest,
                                                       priority=priority, timeout_us=timeout_us)

        results = await self._within_timeout(self.registry.call(model, work))
        if key is not None and served_by[-1] is slot:  # a swap mid-request: not this version's answer
            await asyncio.to_thread(self.cache.set, key, {"results": results})
        return results

    def prompt_ids(self, model: str, prompt: str) -> list[int]:
        self._check_texts([prompt])
        ids = self.registry.get(model).model.tokenizer.encode(prompt).ids
        if not ids:
            raise InvalidInput("the prompt is empty: give at least one token of text")
        return ids

    async def complete(self, model: str, prompt: str, params: GenerationParams) -> Completion:
        """The whole completion at once (cached when deterministic)."""
        ids = self.prompt_ids(model, prompt)
        slot = self.registry.get(model)
        cacheable = is_cacheable({"temperature": params.temperature, "seed": params.seed})
        key = self._key(slot, "generate", ids, params.key()) if cacheable else None
        if key is not None and (hit := await asyncio.to_thread(self.cache.get, key)) is not None:
            return Completion(**hit)
        pieces, last = [], None
        async for piece, state in self.stream(model, ids, params):
            pieces.append(piece)
            last = state
        completion = Completion("".join(pieces), last.finish_reason, len(ids), last.completion_tokens)
        if key is not None:
            await asyncio.to_thread(self.cache.set, key, completion.__dict__)
        return completion

    async def stream(self, model: str, ids: list[int], params: GenerationParams
                     ) -> AsyncIterator[tuple[str, Completion]]:
        """Text pieces as tokens arrive, each with the completion's state so far; the last state has
        the finish reason. Stop strings end the text before them (never sent)."""
        self._check_params(params)
        sampling = SamplingParams(max_new_tokens=params.max_tokens, temperature=params.temperature,
                                  top_k=params.top_k, top_p=params.top_p, seed=params.seed)
        tokenizer, tokens = self.registry.open_stream(model, ids, sampling)
        state = Completion("", "length", len(ids), 0)
        generated: list[int] = []
        decoded = held = ""  # held: decoded text not yet sent, as it may begin a stop string
        self.metrics.observe_tokens(model, len(ids), 0)
        try:
            async for token in tokens:
                state.completion_tokens += 1
                generated.append(token)
                text = tokenizer.decode(generated)
                if text.endswith("\ufffd"):  # a character split over tokens: wait for the rest
                    continue
                held, decoded = held + text[len(decoded):], text
                cut = _stop_at(held, params.stop)
                if cut is not None:
                    state.finish_reason = "stop"
                    yield held[:cut], state
                    return
                sendable = _unambiguous(held, params.stop)
                if sendable:
                    yield held[:sendable], state
                    held = held[sendable:]
            state.finish_reason = "length" if tokens.finish_reason == "length" else "stop"
            yield held, state
        finally:
            await tokens.aclose()

    def _key(self, slot: Slot, operation: str, inputs: list[str], params: dict[str, Any]) -> str | None:
        if self.cache is None:
            return None
        m = slot.model
        return cache_key(m.name, f"{m.version}:{m.runtime}", m.tokenizer_digest, operation, inputs, params)

    def _check_texts(self, texts: list[str]) -> None:
        s = self.settings
        if not texts:
            raise InvalidInput("no input text: send at least one")
        if len(texts) > s.max_inputs:
            raise InvalidInput(f"{len(texts)} inputs in one request; at most {s.max_inputs}")
        longest = max(len(t) for t in texts)
        if longest > s.max_input_chars:
            raise InvalidInput(f"an input of {longest} characters; at most {s.max_input_chars}")

    def _check_params(self, p: GenerationParams) -> None:
        if not 1 <= p.max_tokens <= self.settings.max_tokens:
            raise InvalidInput(f"max_tokens={p.max_tokens}: expected 1..{self.settings.max_tokens}")
        if p.temperature < 0 or (p.top_k is not None and p.top_k < 1) or (
                p.top_p is not None and not 0 < p.top_p <= 1):
            raise InvalidInput(f"expected temperature >= 0, top_k >= 1, 0 < top_p <= 1; got "
                               f"{p.temperature}, {p.top_k}, {p.top_p}")

    async def _within_timeout(self, work: Any) -> Any:
        try:
            return await asyncio.wait_for(work, self.settings.request_timeout_s)
        except TimeoutError:
            raise RequestTimeout(f"no answer within {self.settings.request_timeout_s:g} s; "
                                 f"the server is busy, try again") from None


def _stop_at(text: str, stops: list[str]) -> int | None:
    """Where the first stop string begins in `text`, or None."""
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None


def _unambiguous(text: str, stops: list[str]) -> int:
    """How much of `text` can be sent: all but a tail that could still grow into a stop string."""
    keep = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), 0, -1):
            if stop.startswith(text[-n:]):
                keep = max(keep, n)
                break
    return len(text) - keep
