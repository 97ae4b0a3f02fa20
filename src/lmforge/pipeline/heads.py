"""Task heads: the built-in tasks split once, single-task fine-tuning from the pretrained model and
from scratch (the baseline pretraining has to beat), and multi-task fine-tuning with GradNorm."""

from __future__ import annotations

import random
from pathlib import Path

import torch

from lmforge.artifacts import atomic_dir, atomic_write_text, read_manifest, write_manifest
from lmforge.config import ConfigError, to_dict
from lmforge.model.folder import read_model_config, save_model_folder
from lmforge.model.xl import Transformer
from lmforge.pipeline.stages import Outcome, RunContext, complete, read_json
from lmforge.train.finetune import dev_metric, finetune
from lmforge.train.finetune_config import FinetuneConfig, MultitaskConfig, TaskSettings
from lmforge.train.multitask import multitask

TASK_FILES = {"classify": ("classification.tsv", "tsv"), "ner": ("ner.conll", "conll")}


def tasks_stage(ctx: RunContext) -> Outcome:
    """datasets/tasks/<task>/{train,dev,test}.<ext> (classify also `traffic.tsv`, the rows no stage
    trains or tests on, which the simulated users send), plus the train split cut to each budget."""
    settings, artifacts, figures = ctx.cfg.tasks, {}, {}
    for task, (default_name, ext) in TASK_FILES.items():
        folder = ctx.root / "datasets" / "tasks" / task
        source = getattr(settings, f"{task}_file") or ctx.path("corpus", "dataset") / default_name
        if not complete(folder):
            _split(task, source, folder, ext, ctx)
        artifacts[task] = ctx.relative(folder)
        figures[task] = read_manifest(folder)["sizes"]
    c, n = figures["classify"], figures["ner"]
    return Outcome(artifacts, f"classify {c['train']}/{c['dev']}/{c['test']} (+{c['traffic']} traffic), "
                   f"NER {n['train']}/{n['dev']}/{n['test']} sentences (train/dev/test)", figures)


def _split(task: str, source: Path, folder: Path, ext: str, ctx: RunContext) -> None:
    if not source.is_file():
        raise ConfigError(f"tasks.{task}_file: {source} does not exist; give a labelled file, or run only "
                          "the first half with stop_after=pretrain")
    text = source.read_text(encoding="utf-8")
    if task == "ner":
        header, units = "", [s.strip("\n") + "\n\n" for s in text.split("\n\n") if s.strip()]
    else:
        header, *rows = text.splitlines(keepends=True)
        units = [r if r.endswith("\n") else r + "\n" for r in rows if r.strip()]
    split = getattr(ctx.cfg.tasks, task)
    if len(units) < split.train + split.dev + split.test:
        raise ConfigError(f"tasks.{task}: {split.train}+{split.dev}+{split.test} examples asked, {source} "
                          f"has "
                          f"{len(units)}")
    random.Random(ctx.cfg.tasks.seed).shuffle(units)
    cuts = {"train": units[:split.train], "dev": units[split.train:split.train + split.dev],
            "test": units[split.train + split.dev:split.train + split.dev + split.test]}
    if task == "classify":
        cuts["traffic"] = units[split.train + split.dev + split.test:]
    for budget in ctx.cfg.finetune.label_budgets:
        if budget is not None and budget < split.train:
            cuts[f"train_{budget}"] = units[:budget]
    with atomic_dir(folder) as tmp:
        for name, part in cuts.items():
            atomic_write_text(tmp / f"{name}.{ext}", header + "".join(part))
        write_manifest(tmp, "tasks", to_dict(ctx.cfg.tasks), parents=[source],
                       extra={"sizes": {name: len(part) for name, part in cuts.items()}})


def finetune_stage(ctx: RunContext) -> Outcome:
    """Each task at each label budget, from the pretrained model and from a random initialisation
    of the same architecture, with the same steps, batch and learning rate."""
    pretrained = ctx.path("pretrain", "model")
    scratch = ctx.root / "models" / f"{ctx.cfg.name}-scratch"
    if not complete(scratch):
        _random_init(pretrained, scratch, ctx.cfg.train.seed)
    artifacts, comparison = {"scratch": ctx.relative(scratch)}, []
    for task in TASK_FILES:
        for budget in ctx.cfg.finetune.label_budgets:
            scores = {}
            for init, source in (("pretrained", pretrained), ("scratch", scratch)):
                folder = _finetuned(ctx, source, task, budget)
                artifacts[f"{init}-{task}" + (f"-{budget}" if budget else "")] = ctx.relative(folder)
                scores[init] = read_json(folder / "metrics.json")["test"][dev_metric(task, 1)]
            examples = budget or ctx.outcomes["tasks"].figures[task]["train"]
            comparison.append({"task": task, "metric": dev_metric(task, 1), "examples": examples, **scores})
    artifacts["classify"], artifacts["ner"] = artifacts["pretrained-classify"], artifacts["pretrained-ner"]
    figure = "; ".join(f"{c['task']} {c['examples']} ex.: {c['metric']} {c['pretrained']:.3f} pretrained vs "
                       f"{c['scratch']:.3f} scratch" for c in comparison)
    return Outcome(artifacts, figure, {"comparison": comparison})


def _random_init(pretrained: Path, out: Path, seed: int) -> None:
    """The pretrained model's architecture and tokenizer with fresh weights: the from-scratch baseline."""
    config = read_model_config(pretrained)
    torch.manual_seed(seed)
    save_model_folder(out, Transformer(config), config, pretrained, heads={}, stage="init",
                      parents=[pretrained], extra={"init": "random", "seed": seed})


def _finetuned(ctx: RunContext, source: Path, task: str, budget: int | None) -> Path:
    name = f"{source.name}-{task}" + (f"-{budget}" if budget else "")
    out = ctx.root / "models" / name
    if complete(out):
        return out
    data = ctx.path("tasks", task)
    ext = TASK_FILES[task][1]
    train = data / (f"train_{budget}.{ext}" if budget and (data / f"train_{budget}.{ext}").is_file()
                    else f"train.{ext}")
    s = ctx.cfg.finetune
    ctx.say(f"fine-tuning {name} on {train.name}")
    finetune(FinetuneConfig(model=source, task=task, out=out, steps=s.steps, batch_size=s.batch_size,
                            lr=s.lr, eval_every=s.eval_every, device=ctx.cfg.device,
                            precision=ctx.cfg.train.precision,
                            data={"train": train, "dev": data / f"dev.{ext}", "test": data / f"test.{ext}"}),
             resume="auto")
    return out


def multitask_stage(ctx: RunContext) -> Outcome:
    """Classify, NER and sentence embeddings on one backbone; GradNorm balances their gradients."""
    out = ctx.root / "models" / f"{ctx.cfg.name}-multitask"
    if not complete(out):
        classify, ner = ctx.path("tasks", "classify"), ctx.path("tasks", "ner")
        splits = {name: {"train": folder / f"train.{ext}", "dev": folder / f"dev.{ext}"}
                  for name, folder, ext in (("classify", classify, "tsv"), ("ner", ner, "conll"))}
        tasks = [TaskSettings(task="classify", data=splits["classify"]),
                 TaskSettings(task="ner", data=splits["ner"]),
                 TaskSettings(task="embed", data=splits["classify"], k=1)]
        s = ctx.cfg.multitask
        multitask(MultitaskConfig(model=ctx.path("pretrain", "model"), tasks=tasks, out=out, steps=s.steps,
                                  batch_size=s.batch_size, lr=s.lr, eval_every=s.eval_every,
                                  balancer=s.balancer, device=ctx.cfg.device,
                                  precision=ctx.cfg.train.precision), resume="auto")
    metrics = read_json(out / "metrics.json")
    dev = {head: metrics["dev"][head][dev_metric(head, 1)] for head in ("classify", "ner", "embed")}
    weights = ", ".join(f"{k} {v:.2f}" for k, v in metrics["weights"].items())
    return Outcome({"model": ctx.relative(out)},
                   f"dev classify acc {dev['classify']:.3f}, NER F1 {dev['ner']:.3f}, embed recall@1 "
                   f"{dev['embed']:.3f}; task weights {weights}",
                   {"dev": metrics["dev"], "weights": metrics["weights"]})
