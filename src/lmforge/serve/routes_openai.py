"""The OpenAI-compatible surface vLLM, TGI and Triton's frontend share: `/v1/models`,
`/v1/completions`, `/v1/chat/completions` (SSE streaming: `data: {...}` chunks, then
`data: [DONE]`), `/v1/embeddings`; errors as `{"error": {"message", "type", "code"}}`.

Chat messages become one prompt, `role: content` per line and `assistant:` last. The rendering of
a conversation never changes as it grows, so a follow-up repeats the earlier prompt token for
token and the prefix cache can skip it.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from lmforge.serve.disconnect import unless_disconnected
from lmforge.serve.service import Completion, GenerationParams, InvalidInput, Service

router = APIRouter()


class CompletionBody(BaseModel):
    model: str
    prompt: str
    max_tokens: int = Field(16, ge=1)
    temperature: float = Field(1.0, ge=0)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    n: int = Field(1, ge=1, le=1)
    user: str | None = None

    def params(self) -> GenerationParams:
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if any(not s for s in stop):
            raise InvalidInput("stop strings must not be empty")
        return GenerationParams(self.max_tokens, self.temperature, self.top_p, self.top_k, self.seed, stop)


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatBody(CompletionBody):
    prompt: str = ""
    messages: list[Message] = Field(min_length=1)

    def rendered(self) -> str:
        return "".join(f"{m.role}: {m.content}\n" for m in self.messages) + "assistant:"


class EmbeddingBody(BaseModel):
    model: str
    input: str | list[str]
    user: str | None = None


def service(request: Request) -> Service:
    return request.app.state.service


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    slots = request.app.state.service.registry.slots
    return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "lmforge",
                                        "version": slot.model.version} for name, slot in slots.items()]}


@router.post("/v1/completions", response_model=None)
async def completions(body: CompletionBody, request: Request) -> dict[str, Any] | StreamingResponse:
    return await _generate(request, body, body.prompt, chat=False)


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(body: ChatBody, request: Request) -> dict[str, Any] | StreamingResponse:
    return await _generate(request, body, body.rendered(), chat=True)


@router.post("/v1/embeddings")
async def embeddings(body: EmbeddingBody, request: Request) -> dict[str, Any]:
    texts = [body.input] if isinstance(body.input, str) else body.input
    svc = service(request)
    model = svc.resolve(request, body.model, texts)
    results = await unless_disconnected(request, svc.single_pass(model, "embed", texts))
    svc.answered(request, "embed", texts, results)
    tokenizer = svc.registry.get(model).model.tokenizer
    used = sum(len(tokenizer.encode(t).ids) for t in texts)
    return {"object": "list", "model": body.model,
            "data": [{"object": "embedding", "index": i, "embedding": r["embedding"]}
                     for i, r in enumerate(results)],
            "usage": {"prompt_tokens": used, "total_tokens": used}}


async def _generate(request: Request, body: CompletionBody, prompt: str, chat: bool) -> Any:
    svc = service(request)
    model = svc.resolve(request, body.model, [prompt])
    params = body.params()
    ident = f"{'chatcmpl' if chat else 'cmpl'}-{request.state.request_id}"

    def answered(text: str) -> None:
        svc.answered(request, "generate", [prompt], [{"text": text}])

    if not body.stream:
        done = await unless_disconnected(request, svc.complete(model, prompt, params))
        answered(done.text)
        return _response(ident, body.model, done, chat)
    ids = svc.prompt_ids(model, prompt)
    pieces = svc.stream(model, ids, params)
    first = await anext(pieces)  # errors before the first token still get their HTTP status
    return StreamingResponse(_events(ident, body.model, first, pieces, chat, answered),
                             media_type="text/event-stream")


def _response(ident: str, model: str, done: Completion, chat: bool) -> dict[str, Any]:
    usage = {"prompt_tokens": done.prompt_tokens, "completion_tokens": done.completion_tokens,
             "total_tokens": done.prompt_tokens + done.completion_tokens}
    if chat:
        choice = {"index": 0, "message": {"role": "assistant", "content": done.text},
                  "finish_reason": done.finish_reason}
        return {"id": ident, "object": "chat.completion", "created": int(time.time()), "model": model,
                "choices": [choice], "usage": usage}
    choice = {"index": 0, "text": done.text, "logprobs": None, "finish_reason": done.finish_reason}
    return {"id": ident, "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": [choice], "usage": usage}


async def _events(ident: str, model: str, first: tuple[str, Completion],
                  rest: AsyncIterator[tuple[str, Completion]], chat: bool,
                  answered: Callable[[str], None]) -> AsyncIterator[str]:
    """SSE chunks; an error after the first byte (HTTP 200 already sent) arrives as an error event.
    The whole text is noted for the request log once the last token is sent."""
    created = int(time.time())

    def chunk(piece: str | None, finish: str | None, role: bool = False) -> str:
        if chat:
            delta = {"role": "assistant"} if role else {}
            if piece is not None:
                delta["content"] = piece
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            body = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [choice]}
        else:
            choice = {"index": 0, "text": piece or "", "logprobs": None, "finish_reason": finish}
            body = {"id": ident, "object": "text_completion", "created": created, "model": model,
                    "choices": [choice]}
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    piece, state = first
    text = [piece]
    try:
        yield chunk(piece, None, role=True)
        async for item in rest:
            piece, state = item
            if piece:
                text.append(piece)
                yield chunk(piece, None)
        yield chunk(None, state.finish_reason)
        answered("".join(text))
    except Exception as err:  # noqa: BLE001 - the client must see the error; HTTP 200 is already sent
        yield f"data: {json.dumps({'error': {'message': str(err), 'type': type(err).__name__}})}\n\n"
    finally:
        await rest.aclose()
    yield "data: [DONE]\n\n"
