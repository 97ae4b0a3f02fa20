"""A review queue to and from Label Studio, for teams that annotate in their own tool.

Export writes Label Studio tasks with pre-annotations (`predictions`): the item's text under
`data.text`, its model answer as a `choices` result (classification) or `labels` results with
character offsets, `end` exclusive (NER), and `data.meta.lmforge_item` to find the item again. The
labelling config to create the project with goes beside it (`<queue>.xml`): `label` over `text`.

Import reads Label Studio's JSON export of that project: each task's last annotation that was not
cancelled becomes the item's correction, authored by `labelstudio:<annotator>`. Everything is
checked before anything is stored - a task without our item id, an item of another queue or with
other text (a file from another project), a label the head does not have, a span outside the text -
so a bad file stores nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

from lmforge.artifacts import atomic_write_json, atomic_write_text
from lmforge.errors import LmforgeError
from lmforge.improve.labelling import edit_count
from lmforge.records import Correction, InvalidCorrection, ReviewItem, Span, Store, check_spans

FROM, TO = "label", "text"


class LabelStudioError(LmforgeError):
    """A Label Studio file that does not belong to this queue, or does not parse."""


def to_task(item: ReviewItem) -> dict[str, Any]:
    """One Label Studio task with the model's answer as its pre-annotation."""
    if item.task == "classify":
        result = [{"id": "p0", "from_name": FROM, "to_name": TO, "type": "choices",
                   "value": {"choices": [item.prediction["label"]]}}]
        score = item.prediction.get("score")
    else:
        result = [{"id": f"p{i}", "from_name": FROM, "to_name": TO, "type": "labels",
                   "value": {"start": s["start"], "end": s["end"], "text": item.text[s["start"]:s["end"]],
                             "labels": [s["label"]]}, **({"score": s["score"]} if "score" in s else {})}
                  for i, s in enumerate(item.prediction.get("spans", []))]
        scores = [s["score"] for s in item.prediction.get("spans", []) if "score" in s]
        score = min(scores) if scores else None
    prediction = {"model_version": item.model_version or "lmforge", "result": result}
    if score is not None:
        prediction["score"] = score
    meta = {"lmforge_item": item.id, "queue": item.queue, "request_id": item.request_id,
            "reason": item.reason}
    return {"data": {"text": item.text, "meta": meta}, "predictions": [prediction]}


def label_config(task: str, labels: list[str]) -> str:
    """The project's labelling config: `Choices` (classification) or `Labels` (NER) named `label`."""
    tag, child = ("Choices", "Choice") if task == "classify" else ("Labels", "Label")
    options = "".join(f"<{child} value={quoteattr(label)}/>" for label in labels)
    return (f'<View><Text name="{TO}" value="$text"/>'
            f'<{tag} name="{FROM}" toName="{TO}">{options}</{tag}></View>\n')


def export_queue(store: Store, queue: str, out: Path, status: str | None = "pending") -> int:
    """Write the queue's items as Label Studio tasks to `out`, and its config to `out` + .xml."""
    items = store.review_items(queue=queue, status=status)
    if not items:
        raise LabelStudioError(f"queue {queue!r} has no {status or ''} items to export (queues: "
                               f"{', '.join(store.queues()) or 'none'})")
    tasks = {item.task for item in items}
    if len(tasks) != 1:
        raise LabelStudioError(f"queue {queue!r} mixes tasks {sorted(tasks)}: a project has one "
                               f"labelling config")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, [to_task(item) for item in items])
    atomic_write_text(out.with_suffix(".xml"), label_config(items[0].task, items[0].labels))
    return len(items)


def _annotation(task: dict[str, Any], where: str) -> dict[str, Any] | None:
    """The last annotation that was not cancelled, or None (a task nobody finished)."""
    kept = [a for a in task.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")]
    if kept and not isinstance(kept[-1].get("result"), list):
        raise LabelStudioError(f"{where}: annotation without a result list")
    return kept[-1] if kept else None


def _correction(item: ReviewItem, annotation: dict[str, Any], where: str) -> Correction:
    """The annotation as a correction of `item`, checked against it."""
    results = annotation["result"]
    for result in results:
        if result.get("from_name") != FROM or result.get("to_name") != TO:
            raise LabelStudioError(f"{where}: a result from {result.get('from_name')!r} to "
                                   f"{result.get('to_name')!r}; expected {FROM!r} to {TO!r} "
                                   f"(another project?)")
    who = annotation.get("completed_by")
    who = who.get("email") or who.get("id") if isinstance(who, dict) else who
    author = f"labelstudio:{who if who is not None else 'unknown'}"
    if item.task == "classify":
        chosen = [c for r in results for c in r.get("value", {}).get("choices", [])]
        if len(chosen) != 1 or chosen[0] not in item.labels:
            raise LabelStudioError(f"{where}: expected one choice among {item.labels}, got {chosen}")
        accepted = chosen[0] == item.prediction.get("label")
        return Correction(item_id=item.id, author=author, accepted=accepted, label=chosen[0],
                          edits=0 if accepted else 1)
    spans = []
    for r in results:
        value = r.get("value", {})
        if len(value.get("labels", [])) != 1 or not isinstance(value.get("start"), int):
            raise LabelStudioError(f"{where}: expected labels results with start, end and one label")
        spans.append(Span(value["start"], value["end"], value["labels"][0]))
    try:
        check_spans(spans, item.text, item.labels, where)
    except InvalidCorrection as err:
        raise LabelStudioError(str(err)) from None
    predicted = [Span(s["start"], s["end"], s["label"]) for s in item.prediction.get("spans", [])]
    edits = edit_count(predicted, spans)
    return Correction(item_id=item.id, author=author, accepted=edits == 0, spans=spans, edits=edits)


def import_annotations(store: Store, path: Path, queue: str) -> tuple[int, int]:
    """Store the file's annotations as corrections of `queue`'s items: (stored, skipped: not
    annotated or already reviewed). Nothing is stored unless every task checks out."""
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LabelStudioError(f"{path}: not a Label Studio JSON export ({err})") from None
    if not isinstance(tasks, list):
        raise LabelStudioError(f"{path}: expected a JSON list of tasks (Label Studio's JSON export)")
    corrections, skipped = [], 0
    for n, task in enumerate(tasks):
        where = f"{path}: task {n}"
        meta = task.get("data", {}).get("meta", {}) if isinstance(task, dict) else {}
        item_id = meta.get("lmforge_item") if isinstance(meta, dict) else None
        if not isinstance(item_id, int):
            raise LabelStudioError(f"{where}: no data.meta.lmforge_item (not exported from an lmforge "
                                   f"queue)")
        try:
            item = store.review_item(item_id)
        except InvalidCorrection:
            raise LabelStudioError(f"{where}: item {item_id} is not in {store.url}") from None
        if item.queue != queue or item.text != task["data"].get("text"):
            raise LabelStudioError(f"{where}: item {item_id} belongs to queue {item.queue!r} with other "
                                   f"text; "
                                   f"this file is from another project than queue {queue!r}")
        annotation = _annotation(task, where)
        if annotation is None or item.status != "pending":
            skipped += 1
            continue
        corrections.append(_correction(item, annotation, where))
    for correction in corrections:
        store.save_correction(correction)
    return len(corrections), skipped
