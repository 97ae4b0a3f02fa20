"""The review page (`lmforge serve --review`): a person checks the review queue item by item,
accepts or corrects the model's label or entities from the keyboard, and each decision is stored
as a records `Correction` naming who made it (the fingerprint of their key).

The page is static HTML with plain JavaScript beside it (no build step, nothing fetched from
elsewhere): a key form until the browser holds a valid key, then the review page, which talks to
the JSON API under /review/api. The API takes the server's API key as a Bearer header or, for the
browser, from the HttpOnly, SameSite=Strict cookie POST /review/login sets: once signed in, no
script on the page can read the key, and no other site can make the browser send it.

Entity offsets are character (code point) offsets into the item's text, end exclusive, as in the
Label Studio / Argilla span format. The page snaps a selection to the words of `data.text`'s word
splitter, which the server's NER also reads, so a reviewer's entity covers the same words a
model's would. The edit count stored with a correction is computed here, from the prediction and
the final answer (`edit_count`), not taken from the page: the effort figure then means the same
whichever client sent the correction.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, Field

from lmforge.data.text import word_spans
from lmforge.records import Correction, InvalidCorrection, ReviewItem, Span
from lmforge.serve.auth import bearer, fingerprint

router = APIRouter(prefix="/review")
COOKIE = "lmforge_review"
"""Holds the reviewer's API key; sent only to /review paths."""
ANONYMOUS = "anonymous"
"""The author of corrections made while the server has no keys."""
STATIC = Path(__file__).parent / "static"
ASSETS = {"review.js": "text/javascript", "review.css": "text/css"}
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
                               "base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
"""The page loads only its own script and style, and cannot be framed (clickjacking)."""


class LoginBody(BaseModel):
    key: str = Field(min_length=1)


class SpanBody(BaseModel):
    start: int
    end: int
    label: str


class CorrectionBody(BaseModel):
    accepted: bool
    """True with no label/spans: the prediction as shown is right."""
    label: str | None = None
    spans: list[SpanBody] | None = None
    seconds: float | None = Field(default=None, ge=0)
    """Time the reviewer spent on the item, as the page measured it."""


def review_key(request: Request) -> str | None:
    """The API key in the review cookie, for /review paths (None elsewhere or without one).

    The server's key check takes it as an alternative to the Bearer header on these paths only, so
    the cookie can never authorise a model route."""
    if request.url.path != "/review" and not request.url.path.startswith("/review/"):
        return None
    return request.cookies.get(COOKIE) or None


def edit_count(predicted: list[Span], final: list[Span]) -> int:
    """The reviewer's edits to turn the predicted entities into the final ones: the labelling effort.

    Entities are compared on (start, end, label); scores are ignored. An exactly predicted entity
    costs 0. Every other final entity costs 1: either it is new (an add), or it fixes one predicted
    entity that overlaps it and is not in the final set (a boundary or label fix, 1 edit rather than
    a delete and an add). Every such predicted entity not used by a fix costs 1 (a delete). Fixes
    pair final and predicted entities one to one, as many as possible (a maximum matching over
    overlaps), so: edits = |final - predicted| + |predicted - final| - fixes.

    A wrong label on the right span is 1 edit, a wrong boundary 1, a missed entity 1, a spurious one
    1. Labelling from scratch is the case `predicted = []`, which costs len(final).
    """
    exact_final = {(s.start, s.end, s.label) for s in final}
    exact_predicted = {(s.start, s.end, s.label) for s in predicted}
    added = sorted(exact_final - exact_predicted)
    stale = sorted(exact_predicted - exact_final)
    return len(added) + len(stale) - _max_matching(added, stale)


def _max_matching(left: list[tuple[int, int, str]], right: list[tuple[int, int, str]]) -> int:
    """Size of a maximum one-to-one pairing of overlapping spans (Kuhn's augmenting paths)."""
    partner: dict[int, int] = {}  # right index -> left index

    def augment(i: int, seen: set[int]) -> bool:
        for j, (start, end, _) in enumerate(right):
            if j in seen or not (start < left[i][1] and left[i][0] < end):
                continue
            seen.add(j)
            if j not in partner or augment(partner[j], seen):
                partner[j] = i
                return True
        return False

    return sum(augment(i, set()) for i in range(len(left)))


@router.get("", include_in_schema=False)
def page(request: Request) -> FileResponse:
    """The review page, or the key form while the browser has no valid key."""
    html = "review.html" if _reviewer(request) is not None else "login.html"
    return FileResponse(STATIC / html, media_type="text/html", headers=PAGE_HEADERS)


@router.get("/static/{name}", include_in_schema=False)
def asset(name: str) -> Response:
    if name not in ASSETS:
        return _error(404, f"no review asset {name!r}")
    return FileResponse(STATIC / name, media_type=ASSETS[name], headers={"X-Content-Type-Options": "nosniff"})


@router.post("/login")
def login(body: LoginBody, request: Request) -> Response:
    """Check the key and keep it in an HttpOnly cookie for the /review paths."""
    keys = request.app.state.keys
    if keys.enabled and not keys.check(body.key):
        return _error(401, "unknown API key")
    response = Response(status_code=204)
    response.set_cookie(COOKIE, body.key, path="/review", httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")
    return response


@router.post("/logout")
def logout() -> Response:
    response = Response(status_code=204)
    response.delete_cookie(COOKIE, path="/review", httponly=True, samesite="strict")
    return response


@router.get("/api/queues")
def queues(request: Request) -> Any:
    """Every queue's counts by status, and who is reviewing (a key fingerprint)."""
    reviewer = _reviewer(request)
    if reviewer is None:
        return _unauthorised()
    return {"queues": request.app.state.store.queues(), "reviewer": reviewer}


@router.get("/api/next")
def next_item(request: Request, queue: str = "default", after: int | None = None) -> Any:
    """The first pending item of `queue` behind item `after` in review order (priority, then id),
    wrapping round to the start: skipping walks the whole queue, and after a save the page goes on
    where it was rather than back to items it skipped. 204 when nothing is pending."""
    if _reviewer(request) is None:
        return _unauthorised()
    found = request.app.state.store.next_review_item(queue, after)
    return Response(status_code=204) if found is None else _item_json(found)


@router.get("/api/items/{item_id}")
def item(item_id: int, request: Request) -> Any:
    if _reviewer(request) is None:
        return _unauthorised()
    try:
        return _item_json(request.app.state.store.review_item(item_id))
    except InvalidCorrection:
        return _error(404, f"no review item {item_id}")


@router.post("/api/items/{item_id}/correction")
def correct(item_id: int, body: CorrectionBody, request: Request) -> Any:
    """Store the reviewer's decision; answers the correction id and the edits it counted."""
    author = _reviewer(request)
    if author is None:
        return _unauthorised()
    store = request.app.state.store
    try:
        queued = store.review_item(item_id)
    except InvalidCorrection:
        return _error(404, f"no review item {item_id}")
    try:
        correction = _correction(queued, body, author)
        correction_id = store.save_correction(correction)
    except InvalidCorrection as err:
        return _error(400, str(err))
    return {"id": correction_id, "item": item_id, "accepted": correction.accepted, "edits": correction.edits}


def _correction(queued: ReviewItem, body: CorrectionBody, author: str) -> Correction:
    """The stored decision. A body without a final answer takes the prediction (only when it says
    `accepted`); `accepted` is stored as "the final answer equals the prediction", so that it can
    never disagree with the edit count."""
    if queued.task == "classify":
        predicted_label = queued.prediction.get("label")
        label = body.label if body.label is not None else _taken(body, predicted_label, "label")
        edits = int(label != predicted_label)
        return Correction(queued.id, author, edits == 0, label=label, edits=edits, seconds=body.seconds)
    predicted = spans_of(queued.prediction)
    spans = ([Span(s.start, s.end, s.label) for s in body.spans] if body.spans is not None
             else _taken(body, predicted, "spans"))
    edits = edit_count(predicted, spans)
    return Correction(queued.id, author, edits == 0, spans=spans, edits=edits, seconds=body.seconds)


def spans_of(prediction: dict[str, Any]) -> list[Span]:
    """A review item's predicted entities (`{"spans": [{start, end, label, score?}]}`)."""
    return [Span(int(s["start"]), int(s["end"]), str(s["label"]), s.get("score"))
            for s in prediction.get("spans", [])]


def _taken(body: CorrectionBody, predicted: Any, field: str) -> Any:
    if not body.accepted:
        raise InvalidCorrection(f"{field}: a correction that does not accept the prediction must give one")
    return predicted


def _item_json(queued: ReviewItem) -> dict[str, Any]:
    """The item as the page shows it; NER items carry their words, which selections snap to."""
    words = [list(span) for span in word_spans(queued.text)] if queued.task == "ner" else None
    return {"id": queued.id, "task": queued.task, "text": queued.text, "labels": queued.labels,
            "prediction": queued.prediction, "queue": queued.queue, "status": queued.status,
            "reason": queued.reason, "source": queued.source, "model_version": queued.model_version,
            "words": words}


def _reviewer(request: Request) -> str | None:
    """Who is reviewing: the fingerprint of a valid key (Bearer header first, then the cookie),
    `anonymous` on a server without keys, None when a key is needed and missing or unknown."""
    key = bearer(request) or review_key(request)
    keys = request.app.state.keys
    if keys.enabled and not keys.check(key):
        return None
    return fingerprint(key) if key else ANONYMOUS


def _unauthorised() -> JSONResponse:
    return _error(401, "missing or unknown API key (sign in on /review or send Authorization: Bearer <key>)")


def _error(status: int, message: str) -> JSONResponse:
    """The server's error body outside /v2 (OpenAI's shape)."""
    kind = {401: "authentication_error", 404: "not_found_error"}.get(status, "invalid_request_error")
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status)
