"""The KServe v2 / Open Inference Protocol over HTTP, as Triton speaks it, so `tritonclient.http`
works unchanged: health, server and model metadata, readiness and `infer`; errors as
`{"error": "..."}`.

A model's `infer` takes one BYTES input named `text` (shape [n], one string per row) and runs the
head chosen by the request parameter `task` (classify, ner, embed or score; default: the model's
only task head). Outputs, each [n] rows: classify `label` (BYTES) and `scores` (FP32 [n, labels]);
ner `entities` (BYTES, a JSON list per row); embed `embedding` (FP32 [n, dim]); score
`log_likelihood` (FP32) and `tokens` (INT64). The schedule-policy extension's `priority` (1 = the
highest level) and `timeout` (microseconds allowed in the queue) parameters go to the batcher.

Inputs may come in the binary tensor extension `tritonclient` uses by default: the JSON header is the
first `Inference-Header-Content-Length` bytes of the body and each input with a `binary_data_size`
parameter takes its bytes from the rest, in order (a BYTES element: 4-byte little-endian length,
then the bytes). Outputs are always JSON, which every client reads.
"""

from __future__ import annotations

import json
from importlib.metadata import version as package_version
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from lmforge.artifacts import ArtifactError
from lmforge.serve.disconnect import unless_disconnected
from lmforge.serve.service import InvalidInput, Service

router = APIRouter()
TASKS = ("classify", "ner", "embed", "score")


class InferInput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any] = Field(default_factory=list)
    """Row-major values; empty when the values come in binary (`binary_data_size`)."""
    parameters: dict[str, Any] = Field(default_factory=dict)


class InferRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    inputs: list[InferInput] = Field(min_length=1)
    outputs: list[dict[str, Any]] | None = None


def service(request: Request) -> Service:
    return request.app.state.service


@router.get("/v2/health/live")
async def live() -> dict[str, bool]:
    return {"live": True}


@router.get("/v2/health/ready")
async def ready(request: Request) -> dict[str, bool]:
    if not request.app.state.ready:
        raise NotReady("models are still loading")
    return {"ready": True}


@router.get("/v2")
async def server_metadata() -> dict[str, Any]:
    return {"name": "lmforge", "version": package_version("lmforge"), "extensions": ["schedule_policy"]}


@router.get("/v2/models/{name}")
@router.get("/v2/models/{name}/versions/{version}")
async def model_metadata(name: str, request: Request, version: str | None = None) -> dict[str, Any]:
    model = _model(service(request), name, version)
    inputs = [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    return {"name": name, "versions": [model.version], "platform": f"lmforge_{model.runtime}",
            "inputs": inputs,
            "outputs": [{"name": n, "datatype": d, "shape": s} for n, d, s in _outputs(model)],
            "parameters": {"tasks": sorted({h.task for h in model.heads.values()})}}


@router.get("/v2/models/{name}/ready")
@router.get("/v2/models/{name}/versions/{version}/ready")
async def model_ready(name: str, request: Request, version: str | None = None) -> dict[str, Any]:
    _model(service(request), name, version)
    return {"name": name, "ready": True}


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with its `$defs` references replaced by the definitions (OpenAPI resolves `$ref`
    from the document's root, where pydantic's `#/$defs/...` does not exist)."""
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(defs[node["$ref"].rsplit("/", 1)[-1]])
            return {key: resolve(value) for key, value in node.items()}
        return [resolve(item) for item in node] if isinstance(node, list) else node

    return resolve(schema)


INFER_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": _inlined(InferRequest.model_json_schema())}}}}
"""The route reads its body itself (for the binary extension); this documents the JSON form."""


@router.post("/v2/models/{name}/infer", openapi_extra=INFER_BODY)
@router.post("/v2/models/{name}/versions/{version}/infer", openapi_extra=INFER_BODY)
async def infer(name: str, request: Request, version: str | None = None) -> dict[str, Any]:
    body = _infer_request(await request.body(), request.headers.get("inference-header-content-length"))
    svc = service(request)
    texts = _texts(body)
    served = svc.resolve(request, name, texts)
    model = _model(svc, served, version)
    task = body.parameters.get("task") or _only_task(model)
    if task not in TASKS:
        raise InvalidInput(f"parameters.task {task!r}: expected one of {', '.join(TASKS)}")
    policy = {key: body.parameters.get(key, 0) for key in ("priority", "timeout")}
    for key, value in policy.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise InvalidInput(f"parameters.{key} {value!r}: expected a non-negative integer")
    work = svc.single_pass(served, task, texts, priority=policy["priority"], timeout_us=policy["timeout"])
    results = await unless_disconnected(request, work)
    svc.answered(request, task, texts, results)
    response = {"model_name": name, "model_version": model.version, "outputs": _encode(task, results)}
    if body.id is not None:
        response["id"] = body.id
    return response


class NotReady(Exception):
    """Readiness before the models are loaded and warmed: 503."""


def _infer_request(raw: bytes, header_length: str | None) -> InferRequest:
    """The request, its binary input data (if any) decoded into each input's `data`."""
    try:
        size = int(header_length) if header_length is not None else len(raw)
        body = InferRequest.model_validate_json(raw[:size])
    except ValueError as err:
        raise InvalidInput(f"the body is not a KServe v2 inference request: {_first_line(err)}") from None
    binary = memoryview(raw)[size:]
    for item in body.inputs:
        length = item.parameters.get("binary_data_size")
        if length is None:
            continue
        if not isinstance(length, int) or length > len(binary) or item.datatype != "BYTES":
            raise InvalidInput(f"input {item.name!r}: binary_data_size {length!r} does not fit the "
                               f"{len(binary)} bytes left (only BYTES inputs are read in binary)")
        item.data, binary = _bytes_elements(bytes(binary[:length]), item.name), binary[length:]
    return body


def _bytes_elements(data: bytes, name: str) -> list[str]:
    """BYTES tensor elements: each a 4-byte little-endian length, then that many UTF-8 bytes."""
    elements, at = [], 0
    while at < len(data):
        n = int.from_bytes(data[at:at + 4], "little")
        chunk = data[at + 4:at + 4 + n]
        if at + 4 > len(data) or len(chunk) != n:
            raise InvalidInput(f"input {name!r}: truncated BYTES element at byte {at}")
        try:
            elements.append(chunk.decode("utf-8"))
        except UnicodeDecodeError:
            raise InvalidInput(f"input {name!r}: element at byte {at} is not UTF-8 text") from None
        at += 4 + n
    return elements


def _first_line(err: Exception) -> str:
    return " ".join(str(err).split())[:200]


def _model(svc: Service, name: str, version: str | None) -> Any:
    model = svc.registry.get(name).model
    if version is not None and version != model.version:
        raise ArtifactError(f"model {name!r} serves version {model.version}, not {version!r}")
    return model


def _texts(body: InferRequest) -> list[str]:
    (text,) = [i for i in body.inputs if i.name == "text"] or [None]
    if text is None:
        raise InvalidInput(f"expected an input named 'text'; got {', '.join(i.name for i in body.inputs)}")
    if text.datatype != "BYTES" or len(text.shape) != 1 or text.shape[0] != len(text.data):
        raise InvalidInput(f"input 'text': expected datatype BYTES and shape [{len(text.data)}] "
                           f"(one string per row); got {text.datatype} {text.shape}")
    if not all(isinstance(item, str) for item in text.data):
        raise InvalidInput("input 'text': every row must be a string")
    return text.data


def _only_task(model: Any) -> str:
    tasks = [h.task for h in model.heads.values()]
    tasks = [task for task in tasks if task != "score"] or tasks  # an LM alone: scoring
    if len(tasks) != 1:
        raise InvalidInput(f"model has heads for {', '.join(tasks) or 'nothing'}; choose one with "
                           f"parameters.task")
    return tasks[0]


def _outputs(model: Any) -> list[tuple[str, str, list[int]]]:
    outputs = []
    for head in model.heads.values():
        outputs += {"classify": [("label", "BYTES", [-1]), ("scores", "FP32", [-1, len(head.labels)])],
                    "ner": [("entities", "BYTES", [-1])], "embed": [("embedding", "FP32", [-1, -1])],
                    "score": [("log_likelihood", "FP32", [-1]), ("tokens", "INT64", [-1])]}[head.task]
    return outputs


def _encode(task: str, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    n = len(results)
    if task == "classify":
        labels = list(results[0]["scores"])
        scores = [r["scores"][label] for r in results for label in labels]
        return [{"name": "label", "datatype": "BYTES", "shape": [n], "data": [r["label"] for r in results]},
                {"name": "scores", "datatype": "FP32", "shape": [n, len(labels)], "data": scores}]
    if task == "ner":
        return [{"name": "entities", "datatype": "BYTES", "shape": [n],
                 "data": [json.dumps(r["entities"], ensure_ascii=False) for r in results]}]
    if task == "embed":
        dim = len(results[0]["embedding"])
        return [{"name": "embedding", "datatype": "FP32", "shape": [n, dim],
                 "data": [x for r in results for x in r["embedding"]]}]
    return [{"name": "log_likelihood", "datatype": "FP32", "shape": [n],
             "data": [r["log_likelihood"] for r in results]},
            {"name": "tokens", "datatype": "INT64", "shape": [n], "data": [r["tokens"] for r in results]}]
