"""`lmforge run`: the whole lifecycle, stage after stage, through artifact folders.

corpus -> curate -> tokenizer -> pretrain -> tasks -> finetune (and from-scratch baselines) ->
multitask -> quantize, distill, prune -> compress-report -> export -> serve (simulated users) ->
review (mined, corrected) -> ewc -> abtest (and promotion) -> report.

Stages never call each other in memory: each reads the folders earlier stages wrote, so a re-run
skips every complete stage and resumes an interrupted one (see `stages`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lmforge.artifacts import run_layout, write_manifest
from lmforge.config import ConfigError, to_dict
from lmforge.pipeline.build import corpus_stage, curate_stage, pretrain_stage, tokenizer_stage
from lmforge.pipeline.compression import (
    distill_stage,
    export_stage,
    prune_stage,
    quantize_stage,
    report_stage,
)
from lmforge.pipeline.config import RunConfig
from lmforge.pipeline.heads import finetune_stage, multitask_stage, tasks_stage
from lmforge.pipeline.improvement import abtest_stage, ewc_stage, review_stage
from lmforge.pipeline.stages import Outcome, RunContext, Stage, run_stages
from lmforge.pipeline.traffic import serve_stage

STAGES = [
    Stage("corpus", corpus_stage), Stage("curate", curate_stage), Stage("tokenizer", tokenizer_stage),
    Stage("pretrain", pretrain_stage), Stage("tasks", tasks_stage), Stage("finetune", finetune_stage),
    Stage("multitask", multitask_stage), Stage("quantize", quantize_stage), Stage("distill", distill_stage),
    Stage("prune", prune_stage), Stage("compress-report", report_stage), Stage("export", export_stage),
    Stage("serve", serve_stage), Stage("review", review_stage), Stage("ewc", ewc_stage),
    Stage("abtest", abtest_stage),
]


@dataclass
class RunSummary:
    root: Path
    outcomes: dict[str, Outcome]
    report: Path | None


def run_pipeline(cfg: RunConfig, say=print) -> RunSummary:
    """Every stage under ROOT/NAME/ (up to cfg.stop_after), then the report of what exists."""
    from lmforge.report import build_report

    names = [stage.name for stage in STAGES]
    if cfg.stop_after is not None and cfg.stop_after not in names:
        raise ConfigError(f"stop_after={cfg.stop_after!r}: expected one of {', '.join(names)}")
    layout = run_layout(cfg.root, cfg.name)
    ctx = RunContext(cfg, layout["root"], say)
    run_stages(STAGES, ctx)
    report = build_report(ctx.root)
    made = [ctx.root / path for o in ctx.outcomes.values() for path in o.artifacts.values()]
    write_manifest(ctx.root, "run", to_dict(cfg), parents=made,
                   extra={"stages": {name: o.figures for name, o in ctx.outcomes.items()}})
    return RunSummary(ctx.root, ctx.outcomes, report)


__all__ = ["STAGES", "RunConfig", "RunSummary", "run_pipeline"]
