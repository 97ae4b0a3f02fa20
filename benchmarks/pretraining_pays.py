"""Does pretraining pay on the built-in corpus's own tasks, and how much of it does it take?

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/pretraining_pays.py --run runs/quickstart   # ~20 min
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/pretraining_pays.py --run RUN --quick       # prints only

Reads a finished `lmforge run` folder (its tokenizer, token shards, task splits and settings) and
pretrains the same architecture for each step count of `--steps` with the run's own pretraining
settings (the schedule stretched to the step count). Every pretrained model and a random
initialisation of the same architecture (the baseline, in the same run) are fine-tuned on the
topic-classification and NER splits with the run's fine-tuning settings, at each label budget,
once per seed (the fine-tuning seed: data order, dropout, head initialisation); the test score of
each is the figure. Nothing is selected on test data: the best dev weights are kept, as the
lifecycle does. Writes benchmarks/results/pretraining_pays.md (not with --quick).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from claim_c1_position_encoding import mean_std

from lmforge.config import build
from lmforge.model.folder import read_model_config, save_model_folder
from lmforge.model.xl import Transformer
from lmforge.pipeline import RunConfig
from lmforge.train import PretrainConfig, pretrain
from lmforge.train.finetune import dev_metric, finetune
from lmforge.train.finetune_config import FinetuneConfig

RESULTS = Path(__file__).parent / "results" / "pretraining_pays.md"
TASKS = {"classify": "tsv", "ner": "conll"}


def run_settings(run: Path) -> RunConfig:
    """The settings the run was made with, from its manifest."""
    return build(RunConfig, json.loads((run / "manifest.json").read_text())["config"], str(run))


def pretrained(run: Path, cfg: RunConfig, steps: int, out: Path) -> Path:
    """The run's model pretrained for `steps` steps on the run's tokens (checkpoints in `out`)."""
    train = cfg.train.model_copy(update={"steps": steps, "device": "cpu",
                                         "checkpoint_every": steps, "eval_every": max(steps // 4, 1)})
    data = {"tokens": run / "datasets" / "curated" / "tokens", "tokenizer": run / "tokenizers" / "default"}
    return pretrain(PretrainConfig(name=f"steps{steps}", out=out, model=cfg.model, data=data, train=train),
                    resume=None).model_dir


def random_init(template: Path, out: Path) -> Path:
    config = read_model_config(template)
    torch.manual_seed(0)
    return save_model_folder(out, Transformer(config), config, template, heads={}, stage="init")


def fine_tuned_score(model: Path, run: Path, cfg: RunConfig, task: str, budget: int | None, seed: int,
                     out: Path) -> float:
    data, ext = run / "datasets" / "tasks" / task, TASKS[task]
    train = data / (f"train_{budget}.{ext}" if budget else f"train.{ext}")
    s = cfg.finetune
    result = finetune(FinetuneConfig(model=model, task=task, out=out, steps=s.steps, batch_size=s.batch_size,
                                     lr=s.lr, eval_every=s.eval_every, device="cpu", seed=seed,
                                     data={"train": train, "dev": data / f"dev.{ext}",
                                           "test": data / f"test.{ext}"}), resume=None)
    return result.test[dev_metric(task, 1)]


def report(rows: list[dict], args: argparse.Namespace, minutes: float) -> str:
    lines = ["# Pretraining pays: pretrained against from scratch on the built-in corpus's tasks", "",
             f"`python benchmarks/pretraining_pays.py --run {args.run}`; {minutes:.0f} min on this machine. "
             f"Test scores, mean ± sd over fine-tuning seeds {args.seeds}; the same architecture and "
             "fine-tuning budget for every row; 0 pretraining steps is the random initialisation.", "",
             "| task | metric | labelled examples | pretraining steps | test score | vs scratch |",
             "|---|---|---:|---:|---:|---:|"]
    for task in TASKS:
        for budget in sorted({r["budget"] for r in rows if r["task"] == task}):
            group = [r for r in rows if r["task"] == task and r["budget"] == budget]
            scratch = mean_std([r["score"] for r in group if r["steps"] == 0])[0]
            for steps in sorted({r["steps"] for r in group}):
                mean, sd = mean_std([r["score"] for r in group if r["steps"] == steps])
                lines.append(f"| {task} | {dev_metric(task, 1)} | {budget} | {steps} | {mean:.3f} ± {sd:.3f} "
                             f"| {mean - scratch:+.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=Path("runs/quickstart"))
    parser.add_argument("--steps", default="200,600,1200", help="Pretraining step counts.")
    parser.add_argument("--seeds", default="0,1,2", help="Fine-tuning seeds.")
    parser.add_argument("--quick", action="store_true", help="50 pretraining steps, one seed; prints only.")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.seeds = "50", "0"
    cfg = run_settings(args.run)
    steps = [int(s) for s in args.steps.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    began, rows = time.perf_counter(), []
    with tempfile.TemporaryDirectory(prefix="pretraining-pays-") as tmp:
        root = Path(tmp)
        models = {0: random_init(args.run / "models" / cfg.name, root / "models" / "scratch")}
        for n in steps:
            models[n] = pretrained(args.run, cfg, n, root)
        for task in TASKS:
            manifest = args.run / "datasets" / "tasks" / task / "manifest.json"
            sizes = json.loads(manifest.read_text())["sizes"]
            for asked in cfg.finetune.label_budgets:
                budget = asked or sizes["train"]
                for n, model in models.items():
                    for seed in seeds:
                        out = root / "models" / f"{model.name}-{task}-{budget}-{seed}"
                        score = fine_tuned_score(model, args.run, cfg, task, asked, seed, out)
                        rows.append({"task": task, "budget": budget, "steps": n, "seed": seed,
                                     "score": score})
                        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    text = report(rows, args, (time.perf_counter() - began) / 60)
    print(text)
    if not args.quick:
        RESULTS.write_text(text)
        print(f"-> {RESULTS}")


if __name__ == "__main__":
    main()
