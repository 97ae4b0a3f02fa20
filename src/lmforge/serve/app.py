"""The FastAPI application: models loaded at start-up, the protocol routers, and what every request
goes through (API key, rate limit, metrics, the error shape of its protocol, cancellation when the
client goes away).

Readiness (`/v2/health/ready`, `lmforge_ready`) turns true only after every model is loaded and
warmed up; shutdown turns it false first, then lets every batcher finish what it has queued.
Errors keep each protocol's shape: `{"error": "..."}` under `/v2`, OpenAI's
`{"error": {"message", "type", "code"}}` elsewhere. A client that disconnects cancels its request:
queued work leaves the batcher, a generating sequence leaves the running batch.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import torch
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from lmforge.artifacts import ArtifactError
from lmforge.data.curate.steps.pii import find_pii, redact
from lmforge.errors import LmforgeError
from lmforge.records import InvalidCorrection, RecordsError, UnknownRequest, open_store
from lmforge.serve.auth import KeyRing, RateLimiter, bearer, fingerprint, read_keys, retry_after_header
from lmforge.serve.batcher import InvalidRequest, QueueFull, QueueTimeout, ShuttingDown
from lmforge.serve.disconnect import ClientGone, unless_disconnected
from lmforge.serve.metrics import ServerMetrics
from lmforge.serve.registry import Registry
from lmforge.serve.request_log import RequestLogger, log_entries
from lmforge.serve.result_cache import open_cache
from lmforge.serve.routes_improve import router as improve_router
from lmforge.serve.routes_kserve import NotReady
from lmforge.serve.routes_kserve import router as kserve_router
from lmforge.serve.routes_openai import router as openai_router
from lmforge.serve.routes_review import review_key
from lmforge.serve.routes_review import router as review_router
from lmforge.serve.service import InvalidInput, RequestTimeout, Service
from lmforge.serve.settings import ModelSpec, Runtime, ServeSettings

log = logging.getLogger("lmforge.serve")
OPEN_PATHS = ("/v2/health/live", "/v2/health/ready", "/health", "/review", "/review/login", "/review/logout")
"""Routes that need no API key: load balancers and orchestrators probe the health routes; the review
page shows its key form (its API under /review/api/ takes the key, or the cookie the form sets)."""
STATUS = [(ClientGone, 499), (InvalidInput, 400), (InvalidRequest, 400), (ArtifactError, 404),
          (UnknownRequest, 404), (InvalidCorrection, 400), (RecordsError, 503),
          (QueueFull, 503), (QueueTimeout, 503), (RequestTimeout, 503), (ShuttingDown, 503), (NotReady, 503),
          (LmforgeError, 400)]
"""Error type -> HTTP status, first match wins; 503s carry Retry-After."""

native = APIRouter()


class TextsBody(BaseModel):
    model: str
    input: str | list[str]
    head: str | None = None


class LoadBody(BaseModel):
    path: Path
    runtime: Runtime = "eager"


@native.post("/v1/classify")
async def classify(body: TextsBody, request: Request) -> dict[str, Any]:
    return await _texts_route(body, request, "classify")


@native.post("/v1/ner")
async def ner(body: TextsBody, request: Request) -> dict[str, Any]:
    return await _texts_route(body, request, "ner")


async def _texts_route(body: TextsBody, request: Request, task: str) -> dict[str, Any]:
    texts = [body.input] if isinstance(body.input, str) else body.input
    svc = request.app.state.service
    model = svc.resolve(request, body.model, texts)
    results = await unless_disconnected(request, svc.single_pass(model, task, texts, body.head))
    ids = svc.answered(request, task, texts, results, body.head)
    return {"model": body.model, "results": [{"id": i, **r} for i, r in zip(ids, results, strict=True)]}


@native.get("/metrics")
async def metrics(request: Request) -> Response:
    body, content_type = request.app.state.metrics.exposition()
    return Response(body, media_type=content_type)


@native.get("/health")
async def health(request: Request) -> dict[str, Any]:
    return {"live": True, "ready": request.app.state.ready}


@native.post("/admin/models/{name}/load")
async def load_model(name: str, body: LoadBody, request: Request) -> dict[str, Any]:
    """Load a new version of `name` and swap it in when warm (admin key)."""
    slot = await request.app.state.service.registry.load(ModelSpec(path=body.path, runtime=body.runtime,
                                                                   name=name))
    return slot.model.describe()


def create_app(settings: ServeSettings) -> FastAPI:
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    metrics = ServerMetrics()
    keys = KeyRing(read_keys(settings.api_keys_file, settings.api_keys_env),
                   read_keys(None, settings.admin_keys_env))
    cache = open_cache(settings.redis_url, ttl_seconds=settings.cache_ttl_s,
                       max_bytes=settings.cache_max_bytes,
                       on_lookup=lambda outcome: metrics.observe_cache("result", outcome))
    registry = Registry(settings, metrics)
    store = None if settings.records_url is None else open_store(settings.records_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for spec in settings.models:
            await registry.load(spec)
        if store is not None:
            app.state.request_log = RequestLogger(store)
            app.state.request_log.start()
            if settings.retention_days is not None:
                app.state.request_log.keep_for(settings.retention_days)
        app.state.ready = True
        metrics.set_ready(True)
        try:
            yield
        finally:
            app.state.ready = False
            metrics.set_ready(False)
            await registry.close()
            if store is not None:
                await app.state.request_log.close()
                store.close()

    app = FastAPI(title="lmforge", lifespan=lifespan)
    app.state.ready = False
    app.state.metrics, app.state.keys = metrics, keys
    app.state.limiter = RateLimiter(settings.rate_limit, settings.rate_burst)
    salt = os.environ.get(settings.user_salt_env, "")
    app.state.service = Service(settings, registry, metrics, cache, salt)
    app.state.settings = settings
    app.state.store, app.state.request_log = store, None
    for router in (kserve_router, openai_router, native, improve_router):
        app.include_router(router)
    if settings.review:
        app.include_router(review_router)
    app.middleware("http")(_guard)
    for error_type, _ in STATUS:
        app.add_exception_handler(error_type, _lmforge_error)
    app.add_exception_handler(RequestValidationError, _invalid_body)
    return app


async def _guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """Key, rate limit, cancellation on disconnect, metrics and the request log line."""
    state, start = request.app.state, time.perf_counter()
    key = request.state.api_key = bearer(request) or review_key(request)
    request.state.request_id = uuid.uuid4().hex
    path = request.url.path
    if path not in OPEN_PATHS and not path.startswith("/review/static/"):
        if state.keys.enabled and not state.keys.check(key, admin=path.startswith("/admin/")):
            if state.keys.check(key):
                return _error(request, 403, "this route needs an admin key")
            return _error(request, 401, "missing or unknown API key (send Authorization: Bearer <key>)")
        wait = state.limiter.acquire(fingerprint(key or ""))
        if wait:
            return _error(request, 429, "rate limit exceeded", {"Retry-After": retry_after_header(wait)})
    response = await call_next(request)
    response.headers["X-Request-Id"] = request.state.request_id
    # Observed when the body's last byte is sent, so a streamed answer counts its whole duration.
    outcome = _outcome(response.status_code)
    response.body_iterator = _observed(response.body_iterator, request, outcome, start)
    _log(request, response.status_code, time.perf_counter() - start, key)
    return response


async def _observed(body: AsyncIterator[Any], request: Request, outcome: str,
                    start: float) -> AsyncIterator[Any]:
    """A streamed body, its request observed (and recorded) when the last byte is sent, or the
    client leaves."""
    try:
        async for chunk in body:
            yield chunk
    except asyncio.CancelledError:
        outcome = "cancelled"
        raise
    finally:
        seconds = time.perf_counter() - start
        route = getattr(request.scope.get("route"), "path", "unmatched")
        model = getattr(request.state, "model", "-")
        request.app.state.metrics.observe_request(model, route, outcome, seconds)
        if outcome == "ok":
            _record(request, route, seconds)


def _record(request: Request, route: str, seconds: float) -> None:
    """The request's answers into the request log, when the server keeps one."""
    state, answers = request.app.state, getattr(request.state, "answers", None)
    if state.request_log is None or answers is None:
        return
    slot = state.service.registry.slots.get(request.state.model)
    version = slot.model.version if slot is not None else "-"
    experiment = {key: getattr(request.state, key, None) for key in ("experiment", "variant", "user")}
    for entry in log_entries(*answers, model=request.state.model, version=version, route=route,
                             seconds=seconds, **experiment):
        state.request_log.record(entry)


def _outcome(status: int) -> str:
    if status == 499:
        return "cancelled"
    if status in (429, 503):
        return "rejected"
    if status >= 500:
        return "error"
    return "invalid" if status >= 400 else "ok"


def _log(request: Request, status: int, seconds: float, key: str | None) -> None:
    """One line per request; the text only when `log_requests` asks for it, and then PII-anonymised."""
    who = fingerprint(key) if key else "-"
    line = f"{request.method} {request.url.path} {status} {seconds * 1000:.1f} ms key={who}"
    if request.app.state.settings.log_requests:
        text = getattr(request.state, "logged_text", "")
        line += f" text={redact(text, find_pii(text))!r}"
    log.info(line)


def _error(request: Request, status: int, message: str,
           headers: dict[str, str] | None = None) -> JSONResponse:
    """The error body of the request's protocol."""
    if request.url.path.startswith("/v2"):
        body: dict[str, Any] = {"error": message}
    else:
        body = {"error": {"message": message, "type": _error_type(status), "code": status}}
    return JSONResponse(body, status_code=status, headers=headers)


def _error_type(status: int) -> str:
    return {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
            429: "rate_limit_error"}.get(status, "invalid_request_error" if status < 500 else "server_error")


async def _lmforge_error(request: Request, err: Exception) -> JSONResponse:
    status = next(code for kind, code in STATUS if isinstance(err, kind))
    headers = {"Retry-After": "1"} if status == 503 else None
    return _error(request, status, str(err), headers)


async def _invalid_body(request: Request, err: RequestValidationError) -> JSONResponse:
    first = err.errors()[0]
    where = ".".join(str(part) for part in first["loc"] if part != "body")
    return _error(request, 422, f"{where or 'body'}: {first['msg']}")
