"""Incremental training on corrected examples (`lmforge improve train`): one round of fine-tuning a
served model further with elastic weight consolidation (`improve.ewc`), so that learning from the
corrections does not undo what the model knew.

A round turns a base model folder and a file of corrections into a new model folder:

1. The base's head (classify or ner) keeps its label set: the corrections may show any subset of
   its labels, and a file with a label the head does not have is refused before anything runs.
2. The old task's (theta*, F): the Fisher from `fisher_data` (the old task's data, or a proxy set
   when it is gone) at the base weights, and/or the EWC state the base folder carries from an
   earlier round.
3. `train.finetune` runs the one trainer with the head's labels and the settings it was trained
   with (truncation, attention direction), one `WeightPull` per (theta*, F) pair on the regulariser
   plug point, on the corrections plus, with `replay`, a seeded share of old examples.
4. The Fisher of the corrections at the new weights joins the state: the next round's old task
   includes this round's, and that round needs no old data.
5. The output folder is a model folder like any other (`load_bundle` opens it) plus ewc.json and
   ewc.safetensors; its manifest names the base folder and the data files as parents.

The corrections are read with `text_column`/`label_column` (default "text"/"label": the JSONL that
`improve.corrections` writes), the old task's files (replay, Fisher data) with the columns the head
was trained with; fine-tuning gets them rewritten in the head's own layout, so the head's recorded
usage stays valid.
"""

from __future__ import annotations

import csv
import io
import json
import random
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import Field
from torch import Tensor

from lmforge.artifacts import MANIFEST, ArtifactError, atomic_dir, atomic_write_json, write_manifest
from lmforge.config import ConfigError, to_dict
from lmforge.data.documents import DataError
from lmforge.data.tasks import TaggedExample
from lmforge.device import resolve_device
from lmforge.improve.ewc import Estimator, EwcState, Mode, fisher_diagonal, load_state, save_state
from lmforge.model.bundle import ModelBundle, load_bundle
from lmforge.train.config import OptimSettings
from lmforge.train.finetune import finetune
from lmforge.train.finetune_config import FinetuneConfig, TaskData
from lmforge.train.finetune_data import Encoded, Example, encode_examples, read_examples
from lmforge.train.trainer import PlugPoints

TASKS = ("classify", "ner")


class ImproveConfig(OptimSettings):
    """`lmforge improve train --base MODEL --data CORRECTIONS --ewc-lambda L`."""

    base: Path
    """Model folder to improve (a fine-tuned classify or ner head; an earlier round's output too)."""
    data: Path
    """Corrected examples: TSV/CSV/JSONL text + label (classify) or CoNLL (ner)."""
    ewc_lambda: float = Field(ge=0)
    """lambda of (lambda/2) sum F (theta - theta*)^2 (Kirkpatrick's; Avalanche's lambda is twice it)."""
    mode: Mode = "separate"
    """separate: one pull per past Fisher; online: one decayed sum, pulled to the newest weights."""
    decay: float = Field(0.9, gt=0, le=1)
    """online: F <- decay * F_old + F_new."""
    fisher_data: Path | None = None
    """The old task's examples (or a proxy set) for its Fisher at the base weights; without it, the
    EWC state the base folder carries from an earlier round."""
    fisher_estimator: Estimator = "example"
    """example: mean squared per-example gradient; batch: Avalanche's squared mean-batch gradient."""
    fisher_samples: int = Field(1000, gt=0)
    """At most this many examples (a seeded sample) per Fisher."""
    replay: Path | None = None
    """Old examples to mix into the corrections (same format)."""
    replay_ratio: float = Field(0.3, ge=0, lt=1)
    """Share of the training examples drawn from `replay` (all of it if it has fewer)."""
    head: str | None = None
    """Head to train; default the folder's only classify or ner head."""
    dev: Path | None = None
    """Dev file for early stopping; default a seeded share of the training examples."""
    dev_fraction: float = Field(0.1, gt=0, lt=1)
    """Share of the training examples held out as dev when no dev file is given."""
    text_column: str | int = "text"
    """Text column of `data` and `dev` (name, or position in a header-less TSV/CSV)."""
    label_column: str | int = "label"
    """Label column of `data` and `dev`."""
    old_text_column: str | int | None = None
    """Text column of `replay` and `fisher_data`; default the one the head was trained with."""
    old_label_column: str | int | None = None
    """Label column of `replay` and `fisher_data`; default the one the head was trained with."""
    out: Path | None = None
    """Output model folder; default `<base>-improved` beside the base folder."""
    patience: int = Field(3, gt=0)
    """Stop after this many dev evaluations without a new best."""
    steps: int = Field(300, gt=0)
    """Optimizer steps (upper bound: early stopping may end sooner)."""
    batch_size: int = Field(32, gt=1)
    """Examples per step."""
    lr: float = Field(1e-4, gt=0)
    """Peak rate: a fine-tune of an already fine-tuned model."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW decay; off, since it pulls towards zero against EWC's pull towards theta*."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW moment coefficients (fine-tuning's)."""

    @property
    def output(self) -> Path:
        return self.out or self.base.parent / f"{self.base.name}-improved"


@dataclass
class ImproveResult:
    model_dir: Path
    dev: dict[str, float]
    steps: int
    best_step: int | None
    state: EwcState
    """The EWC state the output folder carries."""
    replayed: int
    """Old examples mixed into the training examples."""
    history: list[dict] = field(default_factory=list)


def improve_train(cfg: ImproveConfig) -> ImproveResult:
    """One incremental round (module docstring); writes `cfg.output`, or nothing when it fails."""
    out = cfg.output
    if out.exists():
        raise ArtifactError(f"{out}: already exists; remove it or choose another name (--out)")
    device = resolve_device(cfg.device)
    base = load_bundle(cfg.base, device)
    head = task_head(base, cfg.head)
    inputs = Inputs.read(cfg, base, head)
    state = old_task_state(cfg, base, head, inputs)
    train = replay_mix(inputs.new, inputs.old, cfg.replay_ratio, cfg.seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as scratch:
        settings = finetune_settings(cfg, base, head, inputs, train, Path(scratch))
        plugs = PlugPoints(regularisers=state.regularisers(cfg.ewc_lambda))
        result = finetune(settings, resume=None, plugs=plugs, labels=inputs.labels)
        trained = load_bundle(result.model_dir, device)
        state = state.consolidate(trained.task_model(head), inputs.fisher(cfg, trained, head, inputs.new),
                                  fisher_record(cfg, cfg.data, out, len(inputs.new)))
        summary = {"ewc_lambda": cfg.ewc_lambda, "mode": cfg.mode, "decay": cfg.decay,
                   "pairs": len(state.entries), "corrections": len(inputs.new),
                   "replayed": len(train) - len(inputs.new)}
        write_output(out, result.model_dir, state, cfg, summary)
    return ImproveResult(out, result.dev, result.steps, result.best_step, state, summary["replayed"],
                         result.history)


def task_head(bundle: ModelBundle, name: str | None) -> str:
    """`name`, checked to be a classify or ner head, or the folder's only such head."""
    if name is not None:
        task = bundle.head(name)["task"]
        if task not in TASKS:
            raise ConfigError(f"head: {bundle.folder} head {name!r} is {task}; EWC rounds train classify "
                              "or ner heads")
        return name
    heads = [n for n, entry in bundle.spec.items() if entry["task"] in TASKS]
    if len(heads) != 1:
        raise ConfigError(f"head: {bundle.folder} has {len(heads)} classify/ner heads "
                          f"({', '.join(heads) or 'none'}); name the one to train (--head)")
    return heads[0]


@dataclass
class Inputs:
    """The round's examples, each file read with its columns and checked against the head's labels."""

    task: str
    labels: list[str]
    usage: dict[str, Any]
    new: list[Example]
    dev: list[Example] | None
    old: list[Example]
    """Replay examples (none without `replay`)."""
    fisher_old: list[Example]
    """The old task's examples for its Fisher (none without `fisher_data`)."""

    @classmethod
    def read(cls, cfg: ImproveConfig, base: ModelBundle, head: str) -> Inputs:
        entry, usage = base.head(head), base.usage(head)
        task, labels = entry["task"], list(entry.get("labels", []))
        new = (cfg.text_column, cfg.label_column)
        old = (usage.get("text_column", "text") if cfg.old_text_column is None else cfg.old_text_column,
               usage.get("label_column", "label") if cfg.old_label_column is None else cfg.old_label_column)

        def read(path: Path | None, columns: tuple[str | int, str | int]) -> list[Example] | None:
            return None if path is None else read_checked(path, task, *columns, labels, head)

        return cls(task, labels, usage, read(cfg.data, new) or [], read(cfg.dev, new),
                   read(cfg.replay, old) or [], read(cfg.fisher_data, old) or [])

    def encoded(self, bundle: ModelBundle, examples: list[Example]) -> Encoded:
        max_len = self.usage.get("max_len", bundle.config.seq_len)
        return encode_examples(bundle.tokenizer, examples, self.task, self.labels, max_len)

    def fisher(self, cfg: ImproveConfig, bundle: ModelBundle, head: str,
               examples: list[Example]) -> dict[str, Tensor]:
        """The Fisher of `examples` (a seeded sample of at most `fisher_samples`) at `bundle`'s weights."""
        chosen = sample(examples, cfg.fisher_samples, cfg.seed)
        return fisher_diagonal(bundle.task_model(head), head, self.encoded(bundle, chosen),
                               cfg.fisher_estimator, cfg.batch_size)


def fisher_record(cfg: ImproveConfig, data: Path, model: Path, n: int) -> dict[str, Any]:
    """Where a Fisher came from, for ewc.json's history: data file, examples, model folder, estimator."""
    return {"data": str(data.resolve()), "examples": min(n, cfg.fisher_samples),
            "model": str(model.resolve()), "estimator": cfg.fisher_estimator}


def read_checked(path: Path, task: str, text_column: str | int, label_column: str | int, labels: list[str],
                 head: str) -> list[Example]:
    """The examples of `path`; a label outside the head's label set is a one-line DataError naming both."""
    examples = read_examples(path, task, text_column, label_column)
    seen = {tag for e in examples for tag in e.tags} if task == "ner" else {e.label for e in examples}
    unknown = sorted(seen - set(labels))
    if unknown:
        shown = ", ".join(unknown[:10]) + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
        raise DataError(f"{path}: labels not in the base model's {head!r} head: {shown} (the head knows "
                        f"{len(labels)} labels; EWC continues that head, so the data must use them)")
    return examples


def old_task_state(cfg: ImproveConfig, base: ModelBundle, head: str, inputs: Inputs) -> EwcState:
    """The pairs this round pulls towards: the base folder's saved state, plus the Fisher of
    `fisher_data` at the base weights when given."""
    saved = load_state(base.folder)
    if saved is not None and saved.mode != cfg.mode:
        raise ConfigError(f"mode: {base.folder} carries {saved.mode} EWC state; continue it with "
                          f"--mode {saved.mode}")
    state = EwcState(cfg.mode, cfg.decay) if saved is None else replace(saved, decay=cfg.decay)
    if cfg.fisher_data is not None:
        fisher = inputs.fisher(cfg, base, head, inputs.fisher_old)
        state = state.consolidate(base.task_model(head), fisher,
                                  fisher_record(cfg, cfg.fisher_data, base.folder, len(inputs.fisher_old)))
    if cfg.ewc_lambda > 0 and not state.entries:
        raise ConfigError(f"fisher_data: {base.folder} carries no EWC state from an earlier round "
                          "(no ewc.json); pass --fisher-data with the old task's examples (or a proxy set)")
    return state


def sample(examples: list[Example], n: int, seed: int) -> list[Example]:
    """At most `n` of `examples`: all of them, or a seeded sample."""
    return examples if len(examples) <= n else random.Random(seed).sample(examples, n)


def replay_mix(new: list[Example], old: list[Example], ratio: float, seed: int) -> list[Example]:
    """`new` followed by a seeded sample of `old` making `ratio` of the whole: round(ratio / (1 -
    ratio) * len(new)) old examples, or all of `old` when it has fewer."""
    if not old or ratio == 0:
        return list(new)
    wanted = round(ratio / (1 - ratio) * len(new))
    return [*new, *random.Random(seed).sample(old, min(wanted, len(old)))]


def write_examples(path: Path, examples: list[Example], text_column: str | int,
                   label_column: str | int) -> Path:
    """Examples as a file `read_examples` reads back unchanged: CoNLL for tagged examples, else CSV
    (quoted where needed) with the named columns as header, or header-less at the given positions."""
    if examples and isinstance(examples[0], TaggedExample):
        path = path.with_suffix(".conll")
        path.write_text("".join("".join(f"{t}\t{g}\n" for t, g in zip(e.tokens, e.tags, strict=True)) + "\n"
                                for e in examples), encoding="utf-8")
        return path
    path = path.with_suffix(".csv")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if isinstance(text_column, int) and isinstance(label_column, int):
        width = max(text_column, label_column) + 1
        for e in examples:
            row = [""] * width
            row[text_column], row[label_column] = e.text, e.label
            writer.writerow(row)
    else:
        writer.writerow([text_column, label_column])
        writer.writerows([e.text, e.label] for e in examples)
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return path


def finetune_settings(cfg: ImproveConfig, base: ModelBundle, head: str, inputs: Inputs, train: list[Example],
                      scratch: Path) -> FinetuneConfig:
    """Fine-tuning of `head` on `train` as the head was trained (truncation, attention, columns)."""
    text = inputs.usage.get("text_column", "text")
    label = inputs.usage.get("label_column", "label")
    train_file = write_examples(scratch / "train", train, text, label)
    dev_file = None if inputs.dev is None else write_examples(scratch / "dev", inputs.dev, text, label)
    return FinetuneConfig(
        **{name: getattr(cfg, name) for name in OptimSettings.model_fields},
        model=cfg.base, task=inputs.task, head=head, out=scratch / "model", patience=cfg.patience,
        max_len=inputs.usage.get("max_len", base.config.seq_len), causal=inputs.usage.get("causal", False),
        data=TaskData(train=train_file, dev=dev_file, text_column=text, label_column=label,
                      dev_fraction=cfg.dev_fraction))


def write_output(out: Path, trained: Path, state: EwcState, cfg: ImproveConfig,
                 summary: dict[str, Any]) -> None:
    """The trained model folder with the EWC state and metrics.json's `improve` entry, written at
    once; its manifest names the base folder and the data files."""
    metrics = json.loads((trained / "metrics.json").read_text(encoding="utf-8"))
    with atomic_dir(out) as tmp:
        for file in trained.iterdir():
            if file.is_file() and file.name not in (MANIFEST, "metrics.json"):
                shutil.copyfile(file, tmp / file.name)
        atomic_write_json(tmp / "metrics.json", {**metrics, "improve": summary})
        save_state(tmp, state)
        parents = [cfg.base, cfg.data, *(p for p in (cfg.dev, cfg.replay, cfg.fisher_data) if p)]
        write_manifest(tmp, "improve", to_dict(cfg), parents)
