"""The report's sections, one function each: RunData -> an HTML fragment.

A section whose stage is not in the index says "not run yet"; one whose artifacts are missing or
malformed says what is wrong in one line (`guarded`), so a partial or damaged run still gets
every other section.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from lmforge.report.figures import (
    comparison_png,
    curves_png,
    funnel_png,
    intervals_png,
    latency_png,
    plain_text,
)
from lmforge.report.markup import Html, facts, image, join, not_run, note, table, tag, text
from lmforge.report.run_data import INDEX, ReportDataError, RunData, manifests, read_json, read_jsonl

MALFORMED = (ReportDataError, KeyError, IndexError, TypeError, ValueError, AttributeError, ZeroDivisionError,
             StopIteration)
"""What rendering an artifact that is not shaped as its stage writes it raises (a key missing, a
string where a number belongs, an empty list)."""

Section = Callable[[RunData], Html]


def guarded(render: Section, data: RunData) -> Html:
    """The section, or one line saying why its artifacts cannot be shown."""
    try:
        return render(data)
    except MALFORMED as err:
        reason = str(err) if isinstance(err, ReportDataError) else f"{type(err).__name__}: {err}"
        return note(f"could not show this section: {reason}")


def stages(data: RunData) -> Html:
    if not data.stages:
        return tag("p", f"not run yet (no stage recorded in {INDEX})", cls="not-run")
    rows: list[list[Any]] = [[s.name, s.seconds, s.figure] for s in data.stages.values()]
    rows.append([tag("strong", "total"), sum(s.seconds or 0.0 for s in data.stages.values()), ""])
    return join([table(["stage", "seconds", "key figure"], rows), *map(note, data.index_problems)])


def funnel(data: RunData) -> Html:
    if "curate" not in data.stages:
        return not_run("curate")
    stats = read_json(data.artifact("curate", "dataset") / "stats.json")
    total, kept = stats["input_documents"], stats["kept_documents"]
    removed = sorted(stats["removed_by_reason"].items(), key=lambda item: -item[1])
    parts = [facts([("documents in", total), ("removed", stats["removed_documents"]),
                    ("kept", f"{text(kept)} ({kept / total:.1%} of the input)")])]
    if removed:
        parts += [image(funnel_png(dict(removed)), "documents removed by reason"),
                  table(["reason", "removed", "share of input"],
                        [[r, n, f"{n / total:.1%}"] for r, n in removed])]
    return join(parts)


def pretraining(data: RunData) -> Html:
    if "pretrain" not in data.stages:
        return not_run("pretrain")
    records, problems = read_jsonl(data.folder / data.stages["pretrain"].figures["log"])
    train = [r for _, r in records if "loss" in r and "lr" in r]
    evaluations = [r for _, r in records if "val_loss" in r]
    first_and_last = evaluations[:1] + evaluations[1:][-1:]
    parts = [facts([("steps", train[-1]["step"] if train else None),
                    ("last train loss", train[-1]["loss"] if train else None),
                    ("validation perplexity",
                     " -> ".join(text(r.get("val_ppl")) for r in first_and_last) or None)])]
    if train or evaluations:
        parts.append(image(curves_png(train, evaluations), "loss and learning-rate curves"))
    if evaluations:
        parts.append(table(["step", "validation loss", "validation perplexity"],
                           [[r["step"], r["val_loss"], r.get("val_ppl")] for r in evaluations]))
    return join([*parts, *map(note, problems)])


def finetuning(data: RunData) -> Html:
    """Three parts, each shown or missing on its own: the fine-tuned models, pretrained against
    from scratch, and the multi-task model."""
    parts: list[Html] = [tag("h3", "Fine-tuned models")]
    if "finetune" in data.stages:
        parts += [guarded(_finetuned, data), tag("h3", "Pretrained against from scratch"),
                  guarded(_comparison, data)]
    else:
        parts.append(not_run("finetune"))
    parts.append(tag("h3", "Multi-task model"))
    parts.append(guarded(_multitask, data) if "multitask" in data.stages else not_run("multitask"))
    return join(parts)


def _finetuned(data: RunData) -> Html:
    """Every fine-tuned folder once (the stage also names the random initialisation of the
    from-scratch baseline, which has no head and no metrics, and gives some folders two keys)."""
    rows, seen = [], set()
    for key in data.stages["finetune"].artifacts:
        folder = data.artifact("finetune", key)
        if folder in seen or not (folder / "metrics.json").exists():
            continue
        seen.add(folder)
        metrics = read_json(folder / "metrics.json")
        rows.append([key, data.relative(folder), metrics.get("task"), metrics.get("steps"),
                     metrics.get("best_step"), metrics.get("dev"), metrics.get("test")])
    return table(["model", "folder", "task", "steps", "best step", "dev", "test"], rows)


def _comparison(data: RunData) -> Html:
    rows = data.stages["finetune"].figures.get("comparison")
    if not rows:
        return note("the finetune stage recorded no comparison")
    return join([
        image(comparison_png(rows), "pretrained against from scratch"),
        table(["task", "metric", "training examples", "pretrained", "from scratch", "difference"],
              [[r["task"], r["metric"], r.get("examples"), r["pretrained"], r["scratch"],
                Html(f"{r['pretrained'] - r['scratch']:+.4g}")] for r in rows]),
    ])


def _multitask(data: RunData) -> Html:
    folder = data.artifact("multitask", "model")
    metrics = read_json(folder / "metrics.json")
    dev, weights = metrics.get("dev", {}), metrics.get("weights", {})
    baseline = metrics.get("majority_baseline", {})
    heads = list(dict.fromkeys([*dev, *weights]))
    return join([
        note(f"{data.relative(folder)}: dev metrics per head and the final task weights"),
        table(["head", "dev", "final task weight", "majority baseline (dev)"],
              [[h, dev.get(h), weights.get(h), baseline.get(h)] for h in heads]),
    ])


def compression(data: RunData) -> Html:
    if "compress-report" not in data.stages:
        return not_run("compress-report")
    # The compression report's own table and Pareto plot; imported here because it brings torch.
    from lmforge.compress.report import Row, _headline_metric, markdown, pareto_png

    found = read_json(data.artifact("compress-report", "report") / "report.json")
    rows = [Row(r["name"], Path(r["folder"]), r["size_bytes"],
                {int(batch): ms for batch, ms in r["latency_ms"].items()}, r["peak_memory_bytes"],
                r["quality"], r["tokens_per_s"]) for r in found]
    if not rows:
        return note("the compression report has no rows")
    metric = _headline_metric(rows[0])
    lines = [line for line in markdown(rows, metric).splitlines() if not line.startswith("|---")]
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    with plain_text():
        pareto = pareto_png(rows, metric)
    return join([table(cells[0], cells[1:]), image(pareto, "quality against latency at batch 1")])


def export(data: RunData) -> Html:
    if "export" not in data.stages:
        return not_run("export")
    rows = []
    for key in data.stages["export"].artifacts:
        folder = data.artifact("export", key)
        verification = read_json(folder / "verification.json")
        # A Triton repository holds several model files, each checked on its own.
        for name, figures in verification.get("models", {key: verification}).items():
            rows.append([key, data.relative(folder), name, figures.get("max_abs_diff"),
                         figures.get("argmax_agreement"), figures.get("greedy_tokens_agreement"),
                         figures["size_bytes"] / 1e6, _export_notes(figures, verification)])
    return table(["export", "folder", "model", "max abs diff to PyTorch", "argmax agreement",
                  "greedy tokens agreement", "size MB", "notes"], rows)


def _export_notes(figures: dict[str, Any], verification: dict[str, Any]) -> str:
    notes = []
    if "size_ratio" in figures:
        notes.append(f"{figures['size_ratio']:.2f}x smaller than fp32")
    if "max_batch_size" in verification:
        notes.append(f"max batch size {verification['max_batch_size']}")
    return "; ".join(notes)


def serving(data: RunData) -> Html:
    if "serve" not in data.stages:
        return not_run("serve")
    metrics = read_json(data.artifact("serve", "serving") / "metrics.json")
    latency = metrics.get("latency_ms", {})
    parts = [
        facts([("model", metrics.get("model")), ("requests", metrics.get("requests")),
               ("errors", metrics.get("errors")), ("concurrency", metrics.get("concurrency")),
               ("seconds", metrics.get("seconds")),
               ("throughput (requests/s)", metrics.get("throughput_rps")),
               ("accuracy", metrics.get("accuracy")), ("feedback", metrics.get("feedback"))]),
        table([f"latency {name} (ms)" for name in latency], [list(latency.values())]),
    ]
    if metrics.get("latencies_ms"):
        marks = {name: latency[name] for name in ("p50", "p99") if name in latency}
        parts.append(image(latency_png(metrics["latencies_ms"], marks), "latency histogram"))
    return join(parts)


def abtest(data: RunData) -> Html:
    if "abtest" not in data.stages:
        return not_run("abtest")
    folder = data.artifact("abtest", "abtest")
    analysis = read_json(folder / "analysis.json")
    level = f"{1 - analysis['alpha']:.0%} {'CS' if analysis['sequential'] else 'CI'}"
    units = analysis["units"]
    control = next(iter(units))
    estimates, comparisons = analysis["estimates"], analysis["comparisons"]
    parts = [
        tag("p", tag("strong", f"Decision: {analysis['decision']}."), " ", analysis["reason"],
            cls="decision"),
        facts([("experiment", analysis.get("experiment")),
               ("mode", "sequential (confidence sequences)" if analysis["sequential"]
                else "fixed horizon (Welch t-test)"),
               ("alpha", analysis["alpha"]),
               ("units", ", ".join(f"{name} {n} (weight {analysis['weights'].get(name)})"
                                   for name, n in units.items())),
               ("sample-ratio-mismatch p", analysis.get("srm_p")),
               ("promotion", guarded(_promotion, data))]),
        table(["metric", "variant", "units with a value", "mean", level],
              [[e["metric"], e["variant"], e["n"], e["mean"], _interval(e["ci"])] for e in estimates]),
    ]
    if estimates:
        parts.append(image(intervals_png(estimates), "means with intervals per variant"))
    parts.append(table(["metric", "comparison", "difference", level, "p", "Holm p", "outcome"],
                       [[c["metric"], f"{c['treatment']} - {control}", c["diff"], _interval(c["ci"]), c["p"],
                         c["p_adjusted"], c["outcome"]] for c in comparisons]))
    return join(parts)


def _promotion(data: RunData) -> Html:
    promotion = read_json(data.artifact("abtest", "abtest") / "promotion.json")
    if not promotion.get("promoted"):
        return join(["not promoted"])
    return join([f"promoted {promotion.get('variant')}, serving version {promotion.get('serves_version')}"])


def _interval(ci: list[float | None]) -> Html:
    low, high = ci
    return join(["[", low, ", ", high, "]"])


def lineage(data: RunData) -> Html:
    found = manifests(data.folder)
    if not found:
        return tag("p", "not run yet (no artifact folder with a manifest.json in the run folder)",
                   cls="not-run")
    rows = []
    for folder, manifest in found:
        if manifest is None:
            rows.append([data.relative(folder), "unreadable manifest", ""])
            continue
        parents = [data.relative(p.get("path", "?")) if isinstance(p, dict) else p
                   for p in manifest.get("parents", [])]
        rows.append([data.relative(folder), manifest.get("stage"), join(parents, "<br>")])
    return table(["artifact", "stage", "made from"], rows)


SECTIONS: list[tuple[str, str, Section]] = [
    ("stages", "Stages", stages),
    ("data", "Data funnel", funnel),
    ("pretraining", "Pretraining", pretraining),
    ("finetuning", "Fine-tuning", finetuning),
    ("compression", "Compression", compression),
    ("export", "Export", export),
    ("serving", "Serving", serving),
    ("abtest", "A/B test", abtest),
    ("lineage", "Lineage", lineage),
]
"""(anchor, title, render) in the order of the lifecycle."""
