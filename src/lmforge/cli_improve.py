"""The improvement verbs: `lmforge improve ...` (mine, Label Studio, corrections, EWC training),
`lmforge label` (pre-labelling for review) and `lmforge abtest ...` (analysis, promotion).

They read and write the records database the server logs to (`--records`: a SQLAlchemy URL or a
SQLite file) and reach a running server only over HTTP.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer

from lmforge.cli_common import DeviceOpt, PrintOpt, SetOpt, given, guarded

improve_app = typer.Typer(help="Mine the served answers for review, exchange them with Label Studio, and "
                               "train on the corrections with EWC.", no_args_is_help=True)
abtest_app = typer.Typer(help="Analyse an A/B test from the records, and promote its winner.",
                         no_args_is_help=True)

RecordsOpt = Annotated[str, typer.Option("--records", help="Records database: a URL (sqlite:///x.db, "
                                         "postgresql+psycopg://...) or a SQLite file.")]
QueueOpt = Annotated[str, typer.Option("--queue", help="Review queue name.")]


def _store(records: str):
    from lmforge.records import open_store

    return open_store(records)


@improve_app.command("mine")
@guarded
def mine_cmd(
    model: Annotated[Path, typer.Argument(help="The model folder that answered (its head's labels are "
                                               "what reviewers choose from).")],
    records: RecordsOpt,
    task: Annotated[str, typer.Option(help="classify or ner.")] = "classify",
    head: Annotated[str | None, typer.Option(help="The head, when the model has several of the "
                                                  "task.")] = None,
    share: Annotated[float, typer.Option(help="Share of the requests to queue (the worst first).")] = 0.01,
    queue: Annotated[str | None, typer.Option(help="Queue name (default mined-<task>-<head>).")] = None,
    days: Annotated[float | None, typer.Option(help="Only requests of the last DAYS days.")] = None,
    served_as: Annotated[str | None, typer.Option(help="Only requests for this served model name.")] = None,
) -> None:
    """Queue the worst answers (negative feedback first, then lowest confidence) for review."""
    from lmforge.improve.mine import mine
    from lmforge.records import utcnow

    since = utcnow() - timedelta(days=days) if days else None
    with _store(records) as store:
        report = mine(store, model, task=task, head=head, share=share, queue=queue, since=since,
                      served_as=served_as)
    typer.echo(f"queue {report.queue}: {report.queued} queued of {report.considered} {task} requests "
               f"({report.negative_feedback} with negative feedback, {report.already_queued} already queued)")


@improve_app.command("export")
@guarded
def export_cmd(records: RecordsOpt, queue: QueueOpt,
               out: Annotated[Path, typer.Option("--out", help="Label Studio tasks (JSON); the labelling "
                                                 "config goes beside it (.xml).")],
               every: Annotated[bool, typer.Option("--all", help="Reviewed items too.")] = False) -> None:
    """Export a review queue as Label Studio tasks with the model's answers as pre-annotations."""
    from lmforge.improve.labelstudio import export_queue

    with _store(records) as store:
        n = export_queue(store, queue, out, status=None if every else "pending")
    typer.echo(f"{n} tasks -> {out} (labelling config: {out.with_suffix('.xml')})")


@improve_app.command("import")
@guarded
def import_cmd(file: Annotated[Path, typer.Argument(help="Label Studio JSON export of the project.")],
               records: RecordsOpt, queue: QueueOpt) -> None:
    """Store a Label Studio project's annotations as corrections of the queue's items."""
    from lmforge.improve.labelstudio import import_annotations

    with _store(records) as store:
        stored, skipped = import_annotations(store, file, queue)
    typer.echo(f"{stored} corrections stored, {skipped} tasks skipped (not annotated or already reviewed)")


@improve_app.command("corrections")
@guarded
def corrections_cmd(records: RecordsOpt, queue: QueueOpt,
                    out: Annotated[Path, typer.Option("--out", help="Training file to write (JSONL for "
                                                      "classification, CoNLL for NER).")]) -> None:
    """Write a queue's reviewed corrections as a fine-tuning file for `improve train`."""
    from lmforge.improve.corrections import write_training_file

    with _store(records) as store:
        task, n = write_training_file(store, queue, out)
    typer.echo(f"{n} {task} examples -> {out}")


@improve_app.command("train")
@guarded
def train_cmd(
    base: Annotated[Path, typer.Option("--base", help="Model folder to improve (a classify or ner head).")],
    data: Annotated[Path, typer.Option("--data", help="Corrections: JSONL/TSV/CSV text + label, or CoNLL.")],
    ewc_lambda: Annotated[float, typer.Option("--ewc-lambda", help="lambda of (lambda/2) sum F "
                                              "(theta - theta*)^2; 0 is plain fine-tuning.")],
    fisher_data: Annotated[Path | None, typer.Option("--fisher-data", help="The old task's data (or a "
                                                     "proxy set) for its Fisher; default: the base's "
                                                     "saved EWC state.")] = None,
    mode: Annotated[str | None, typer.Option(help="separate (a pull per round) or online (one decayed "
                                                  "sum).")] = None,
    replay: Annotated[Path | None, typer.Option(help="Old examples to mix in.")] = None,
    replay_ratio: Annotated[float | None, typer.Option(help="Share of training examples from "
                                                            "--replay.")] = None,
    head: Annotated[str | None, typer.Option(help="The head, when the folder has several.")] = None,
    out: Annotated[Path | None, typer.Option(help="Output model folder (default <base>-improved).")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda or cuda:N.")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML settings file.")] = None,
    set_: SetOpt = None, print_config: PrintOpt = False,
) -> None:
    """Fine-tune on corrections with elastic weight consolidation; the new folder names its parent."""
    from lmforge.config import commented_yaml, load
    from lmforge.improve.incremental import ImproveConfig, improve_train

    cfg = load(ImproveConfig, config, set_, given(base=base, data=data, ewc_lambda=ewc_lambda,
                                                  fisher_data=fisher_data, mode=mode, replay=replay,
                                                  replay_ratio=replay_ratio, head=head, out=out,
                                                  device=device))
    if print_config:
        typer.echo(commented_yaml(cfg))
        return
    result = improve_train(cfg)
    scores = ", ".join(f"{k} {v:.4f}" for k, v in result.dev.items())
    typer.echo(f"dev: {scores}; {result.steps} steps")
    typer.echo(f"model folder: {result.model_dir}")


@guarded
def label_cmd(
    model: Annotated[Path, typer.Argument(help="A fine-tuned NER model folder.")],
    texts: Annotated[Path, typer.Argument(help="Raw texts: a .txt file (one per line) or JSONL with "
                                               "\"text\".")],
    records: RecordsOpt,
    queue: Annotated[str, typer.Option("--queue", help="Review queue to fill.")] = "label",
    head: Annotated[str | None, typer.Option(help="The NER head, when the model has several.")] = None,
    min_score: Annotated[float, typer.Option(help="Show only entities the model scores at least this "
                                                  "(a wrong pre-label costs a delete).")] = 0.0,
    device: DeviceOpt = "auto",
) -> None:
    """Pre-label raw text with an NER model into a review queue (`lmforge serve --review` to correct)."""
    from lmforge.improve.labelling import prelabel, read_texts

    with _store(records) as store:
        n = prelabel(model, read_texts(texts), store, queue, head=head, device=device, min_score=min_score)
    typer.echo(f"{n} texts pre-labelled into queue {queue!r}")


@abtest_app.command("analyze")
@guarded
def analyze_cmd(
    records: RecordsOpt,
    experiment: Annotated[str, typer.Option(help="The experiment's name (the model name clients ask for).")],
    variants: Annotated[str, typer.Option(help="Comma-separated variant model names, the control first.")],
    weights: Annotated[str | None, typer.Option(help="Comma-separated traffic weights (default "
                                                     "equal).")] = None,
    sequential: Annotated[bool, typer.Option(help="Always-valid confidence sequences (may be read at any "
                                                  "time) instead of one fixed-horizon read.")] = False,
    alpha: Annotated[float, typer.Option(help="Significance level.")] = 0.05,
    out: Annotated[Path | None, typer.Option(help="Folder for analysis.json, analysis.md and "
                                                  "analysis.png.")] = None,
) -> None:
    """Per variant n, means and intervals; Welch tests with Holm's correction; SRM; the decision."""
    from lmforge.improve.abtest import AbTestError, analyze, write_analysis
    from lmforge.improve.abtest_records import METRICS, variant_data

    names = [v.strip() for v in variants.split(",") if v.strip()]
    shares = [float(w) for w in weights.split(",")] if weights else [1.0] * len(names)
    if len(shares) != len(names) or len(names) < 2:
        raise AbTestError(f"--variants {variants!r} --weights {weights!r}: expected two or more variants and "
                          f"one weight each")
    with _store(records) as store:
        extracted = variant_data(store, experiment, names, [w / sum(shares) for w in shares])
    analysis = analyze(extracted.variants, METRICS, alpha=alpha, sequential=sequential)
    typer.echo(analysis.table())
    typer.echo(f"{extracted.requests} requests; {extracted.mixed_users} users seen in several variants "
               f"left out")
    if out is not None:
        write_analysis(out, experiment, analysis)
        typer.echo(f"-> {out}/analysis.json, analysis.md, analysis.png")


@abtest_app.command("promote")
@guarded
def promote_cmd(
    experiment: Annotated[str, typer.Option(help="The experiment's name.")],
    url: Annotated[str, typer.Option(help="The server's base URL.")] = "http://127.0.0.1:8000",
    analysis: Annotated[Path | None, typer.Option(help="analysis.json from `abtest analyze --out`: promote "
                                                       "its winner, refused unless its decision is "
                                                       "to promote.")] = None,
    variant: Annotated[str | None, typer.Option(help="Promote this variant regardless of any "
                                                     "analysis.")] = None,
    key_env: Annotated[str, typer.Option(help="Environment variable holding an admin API key.")] =
        "LMFORGE_ADMIN_KEY",
) -> None:
    """Make a variant the served version of the control's name (hot swap) and end the test."""
    from lmforge.improve.abtest import AbTestError
    from lmforge.improve.promotion import promote, winner

    if (analysis is None) == (variant is None):
        raise AbTestError("give exactly one of --analysis (promote its winner) or --variant")
    variant = winner(analysis) if analysis is not None else variant
    served = promote(url, experiment, variant, os.environ.get(key_env))
    typer.echo(f"{experiment}: {variant} promoted; {served['name']} now serves version {served['version']}")
