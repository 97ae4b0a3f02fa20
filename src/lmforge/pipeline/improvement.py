"""Closing the loop: the worst served answers mined for review, corrected by a simulated reviewer
(the built-in corpus's truth), the classifier trained on the corrections with EWC, and the old
and the new classifier A/B-tested through the server, with the winner promoted over HTTP."""

from __future__ import annotations

import json
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lmforge.artifacts import atomic_dir, atomic_write_json, read_manifest, write_manifest
from lmforge.device import resolve_device
from lmforge.improve.abtest import analyze, write_analysis
from lmforge.improve.abtest_records import METRICS, variant_data
from lmforge.improve.corrections import write_training_file
from lmforge.improve.incremental import ImproveConfig, improve_train
from lmforge.improve.mine import mine
from lmforge.improve.promotion import promote
from lmforge.model.bundle import load_bundle
from lmforge.pipeline.stages import Outcome, RunContext, complete, read_json
from lmforge.pipeline.traffic import labelled_rows, records_url, serving
from lmforge.records import Correction, open_store
from lmforge.train.finetune import score_file

REVIEWER = "simulated-reviewer"
EXPERIMENT = "classify"
"""The A/B test's name: the served name users ask for, whose control is the current classifier."""


def review_stage(ctx: RunContext) -> Outcome:
    """Queue the worst share of the served answers (negative feedback first, then the least
    confident), answer each item with the truth of its request, and write the corrections file."""
    out = ctx.root / "improve" / "corrections"
    queue = f"{ctx.cfg.name}-worst"
    if not complete(out):
        serving_dir = ctx.path("serve", "serving")
        lines = (serving_dir / "truth.jsonl").read_text(encoding="utf-8").splitlines()
        truth = {r["request_id"]: r["label"] for r in map(json.loads, lines)}
        with open_store(records_url(ctx)) as store:
            report = mine(store, ctx.path("finetune", "classify"), task="classify",
                          share=ctx.cfg.improve.mine_share, queue=queue, served_as="classify")
            while (item := store.next_review_item(queue)) is not None:
                label = truth[item.request_id]
                store.save_correction(Correction(item_id=item.id, author=REVIEWER, label=label,
                                                 accepted=label == item.prediction["label"]))
            with atomic_dir(out) as tmp:
                _, n = write_training_file(store, queue, tmp / "corrections.jsonl")
                changed = sum(not c.accepted for _, c in store.corrections(queue=queue))
                write_manifest(tmp, "corrections", {"queue": queue, "share": ctx.cfg.improve.mine_share},
                               parents=[serving_dir],
                               extra={"mined": report.queued, "considered": report.considered,
                                      "negative_feedback": report.negative_feedback, "corrections": n,
                                      "changed": changed})
    manifest = read_manifest(out)
    figures = {k: manifest[k] for k in ("mined", "considered", "negative_feedback", "corrections", "changed")}
    return Outcome({"corrections": ctx.relative(out)},
                   f"{figures['mined']} of {figures['considered']} answers reviewed "
                   f"({figures['negative_feedback']} with negative feedback); the reviewer changed "
                   f"{figures['changed']}", figures)


def ewc_stage(ctx: RunContext) -> Outcome:
    """The classifier trained on the corrections, its old task held by EWC (Fisher on its train split)."""
    base, tasks = ctx.path("finetune", "classify"), ctx.path("tasks", "classify")
    out = ctx.root / "models" / f"{base.name}-v2"
    s = ctx.cfg.improve
    if not complete(out):
        improve_train(ImproveConfig(base=base, data=ctx.path("review", "corrections") / "corrections.jsonl",
                                    ewc_lambda=s.ewc_lambda, fisher_data=tasks / "train.tsv",
                                    fisher_samples=s.fisher_samples, dev=tasks / "dev.tsv", steps=s.steps,
                                    batch_size=s.batch_size, lr=s.lr, out=out, device=ctx.cfg.device,
                                    replay=tasks / "train.tsv" if s.replay_ratio else None,
                                    replay_ratio=s.replay_ratio))
    test = tasks / "test.tsv"
    before, after = (score_file(load_bundle(m, resolve_device(ctx.cfg.device)), "classify", "classify", test)
                     ["accuracy"] for m in (base, out))
    return Outcome({"model": ctx.relative(out)}, f"test accuracy {before:.3f} -> {after:.3f} (EWC lambda "
                   f"{s.ewc_lambda:g}, replay {s.replay_ratio:.0%})",
                   {"test_accuracy": {"before": before, "after": after}})


def abtest_stage(ctx: RunContext) -> Outcome:
    """Users split by their id between the old and the new classifier on unseen test rows; each rates
    every answer from the truth; the analysis decides, and a winner is promoted over HTTP."""
    out = ctx.root / "abtest"
    if not complete(out):
        _abtest(ctx, out)
    analysis = read_json(out / "analysis.json")
    promotion = read_json(out / "promotion.json")
    rating = {e["variant"]: e["mean"] for e in analysis["estimates"] if e["metric"] == "rating"}
    means = ", ".join(f"{v} {m:+.3f}" for v, m in rating.items())
    return Outcome({"abtest": ctx.relative(out)},
                   f"{analysis['decision']} (mean rating {means}; units {sum(analysis['units'].values())})"
                   + ("; promoted" if promotion["promoted"] else ""),
                   {"decision": analysis["decision"], "rating": rating, "promotion": promotion})


def _abtest(ctx: RunContext, out: Path) -> None:
    s, control, treatment = ctx.cfg.abtest, ctx.path("finetune", "classify"), ctx.path("ewc", "model")
    variants = {EXPERIMENT: control, f"{EXPERIMENT}-v2": treatment}
    experiment = {"name": EXPERIMENT, "variants": [{"model": name} for name in variants]}
    rows = labelled_rows(ctx.path("tasks", "classify") / "test.tsv")
    with serving(ctx, variants, [experiment]) as served, served.client() as client:
        def user_session(user: str) -> None:
            """A user's requests, each rated from the truth (and the right label given, as an
            annotating user would), so rating and agreement both measure correctness."""
            draws = random.Random(f"{ctx.cfg.tasks.seed}-{user}").sample(rows, s.requests_per_user)
            for text, truth in draws:
                response = client.post("/v1/classify", json={"model": EXPERIMENT, "input": text},
                                       headers={"X-User-Id": user})
                response.raise_for_status()
                answer = response.json()["results"][0]
                client.post("/v1/feedback", json={"request_id": answer["id"], "label": truth,
                                                  "rating": 1 if answer["label"] == truth else -1})

        with ThreadPoolExecutor(ctx.cfg.serve.concurrency) as pool:
            list(pool.map(user_session, [f"ab-user-{i}" for i in range(s.users)]))
        with open_store(records_url(ctx)) as store:
            extracted = variant_data(store, EXPERIMENT, list(variants), [0.5, 0.5])
        analysis = analyze(extracted.variants, METRICS, alpha=s.alpha)
        promotion = {"promoted": False, "variant": None, "serves_version": None}
        if s.promote and analysis.decision.startswith("promote "):
            variant = analysis.decision.removeprefix("promote ")
            serves = promote(served.server.url, EXPERIMENT, variant, served.admin_key)
            promotion = {"promoted": True, "variant": variant, "serves_version": serves["version"]}
    with atomic_dir(out) as tmp:
        write_analysis(tmp, EXPERIMENT, analysis)
        atomic_write_json(tmp / "promotion.json", promotion)
        write_manifest(tmp, "abtest", s.model_dump(mode="json"), parents=[control, treatment],
                       extra={"decision": analysis.decision})
