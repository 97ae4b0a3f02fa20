"""What the improvement loop asks of the server: feedback on an answer (`POST /v1/feedback`), and
the A/B tests it runs (`GET /admin/experiments`, `POST /admin/experiments/{name}/promote`).

Feedback quotes the id an answer carried (`results[].id`, an OpenAI `id` such as `cmpl-<id>`, or
the `X-Request-Id` header). It is checked against the logged request before anything is stored: an
unknown id is a 404, entity spans outside the logged (anonymised) text a 400.

Promotion makes the winning variant the served version of the control's name by the registry's
hot swap (no failed request), then ends the test: every user gets the winner from then on.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, model_validator

from lmforge.artifacts import ArtifactError
from lmforge.records import Feedback, Span, UnknownRequest, check_spans
from lmforge.serve.auth import fingerprint
from lmforge.serve.service import InvalidInput, Service
from lmforge.serve.settings import ModelSpec

router = APIRouter()
ID_PREFIXES = ("chatcmpl-", "cmpl-")


class SpanBody(BaseModel):
    start: int = Field(ge=0)
    end: int = Field(gt=0)
    label: str = Field(min_length=1)


class FeedbackBody(BaseModel):
    request_id: str = Field(min_length=1, max_length=200)
    rating: float | None = Field(None, ge=-1e6, le=1e6)
    """Thumbs (+1 / -1) or a score such as 1..5: what the A/B analysis averages per user."""
    label: str | None = Field(None, min_length=1, max_length=200)
    """The right class of a classification."""
    correction: list[SpanBody] | None = Field(None, max_length=1000)
    """The right entities of an NER answer: character spans into the request's text."""

    @model_validator(mode="after")
    def _says_something(self) -> FeedbackBody:
        if self.rating is None and self.label is None and self.correction is None:
            raise ValueError("give at least one of rating, label, correction")
        return self


class PromoteBody(BaseModel):
    variant: str


@router.post("/v1/feedback")
async def feedback(body: FeedbackBody, request: Request) -> dict[str, Any]:
    state = request.app.state
    if state.store is None:
        raise ArtifactError("this server keeps no records (start it with --records URL), "
                            "so it takes no feedback")
    request_id = body.request_id
    for prefix in ID_PREFIXES:
        request_id = request_id.removeprefix(prefix)
    await state.request_log.flush(request_id)
    logged = await asyncio.to_thread(state.store.request, request_id)
    if logged is None:
        raise UnknownRequest(f"request_id {body.request_id!r}: no such request in the records")
    spans = None
    if body.correction is not None:
        spans = [Span(s.start, s.end, s.label) for s in body.correction]
        check_spans(spans, logged.input_text, None, "correction")
    author = fingerprint(key) if (key := getattr(request.state, "api_key", None)) else None
    item = Feedback(request_id=request_id, rating=body.rating, label=body.label, spans=spans, author=author)
    feedback_id = await asyncio.to_thread(state.store.add_feedback, item)
    return {"id": feedback_id, "request_id": request_id}


@router.get("/admin/experiments")
async def experiments(request: Request) -> dict[str, Any]:
    svc: Service = request.app.state.service
    return {"experiments": [_describe(svc, e.name) for e in svc.experiments.values()]}


@router.post("/admin/experiments/{name}/promote")
async def promote(name: str, body: PromoteBody, request: Request) -> dict[str, Any]:
    """Serve the winning variant under the control's name (hot swap), and end the test."""
    svc: Service = request.app.state.service
    experiment = svc.experiments.get(name)
    if experiment is None:
        known = ", ".join(svc.experiments) or "none"
        raise ArtifactError(f"no experiment named {name!r} (experiments: {known})")
    names = [v.model for v in experiment.variants]
    if body.variant not in names:
        raise InvalidInput(f"variant {body.variant!r}: experiment {name!r} has {', '.join(names)}")
    control, winner = names[0], svc.registry.get(body.variant).model
    if body.variant != control:
        await svc.registry.load(ModelSpec(path=winner.folder, runtime=winner.runtime, name=control))
    described = _describe(svc, name)
    del svc.experiments[name]
    return {**described, "promoted": body.variant, "serves": svc.registry.get(control).model.describe()}


def _describe(svc: Service, name: str) -> dict[str, Any]:
    experiment = svc.experiments[name]
    variants = []
    for variant, weight in zip(experiment.variants, experiment.weights, strict=True):
        model = svc.registry.get(variant.model).model
        variants.append({"model": variant.model, "weight": weight, "version": model.version,
                         "folder": str(model.folder), "runtime": model.runtime})
    return {"name": name, "seed": experiment.seed or name, "coverage": experiment.coverage,
            "variants": variants}
