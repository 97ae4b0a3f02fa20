"""Knowledge distillation (`lmforge distill`) as a configuration of the one trainer.

The teacher is the trainer's `teacher` plug: a frozen model whose outputs for each micro-batch
(its logits and the outputs of the mapped blocks) reach the distillation objective's loss. The
backbone returns only its final hidden state, so block outputs are read with forward hooks on
`blocks[i]` of both models, and the model file stays as it is. The module the trainer trains is
the student plus the linear projections of its mapped blocks onto the teacher's width (TinyBERT's
W_h): they learn with the student and are dropped when its model folder is written.

The LM teacher keeps its own recurrence memory per micro-batch, as the student does (row b of a
step continues row b of the step before). It is a step callback too, so that memory is saved in
every checkpoint (its tensors in `callbacks.safetensors`) and a resumed run sees the same teacher
outputs as an uninterrupted one.
One process (no `--nproc`): the student is small by design.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmforge.artifacts import ArtifactError, read_manifest
from lmforge.compress.distill_config import DistillConfig, DistillLoss
from lmforge.config import ConfigError, build, to_dict
from lmforge.device import resolve_device
from lmforge.model import PRESETS, ModelConfig, MultiTaskModel, Transformer, build_heads
from lmforge.model.bundle import ModelBundle, load_bundle
from lmforge.model.folder import save_model_folder
from lmforge.parallel import Layout
from lmforge.tokenizer import SegmentBatches, TokenStream
from lmforge.train.engine import Batch, Engine, TrainObjective
from lmforge.train.finetune import EVAL_BATCH, Split, TaskSplits, checkpoint_root, output_spec
from lmforge.train.finetune_config import TaskData, TaskSettings
from lmforge.train.finetune_data import Encoded, batch, encode_examples, hold_out, read_examples
from lmforge.train.objectives import IGNORE, LanguageModelling, Objective, count_targets, summed_loss
from lmforge.train.pretrain import evaluate_lm
from lmforge.train.task_objective import TaskObjective
from lmforge.train.trainer import Monitor, PlugPoints, Trainer, seed_everything

LayerMap = dict[int, int]
"""Student block -> teacher block."""


# -- the loss ------------------------------------------------------------------------------------


def widened(x: Tensor) -> Tensor:
    """`x` in at least float32 (bf16 under autocast is upcast, float64 stays float64)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def soft_kl(student: Tensor, teacher: Tensor, tau: float) -> Tensor:
    """tau^2 * KL(softmax(teacher / tau) || softmax(student / tau)) per position (over the last dim).

    The tau^2 (Hinton et al. 2015) keeps the soft term's gradient the same size whatever tau, so
    its weight against the hard loss means the same at every temperature.
    """
    log_q = F.log_softmax(widened(student) / tau, dim=-1)
    log_p = F.log_softmax(widened(teacher) / tau, dim=-1)
    return tau**2 * F.kl_div(log_q, log_p, log_target=True, reduction="none").sum(-1)


def uniform_map(n_student: int, n_teacher: int) -> LayerMap:
    """TinyBERT's uniform mapping g(m) = m * N / M (1-based): student block i (0-based) -> teacher
    block (i + 1) * N // M - 1, so the last blocks always meet (2 of 4: {0: 1, 1: 3})."""
    return {i: (i + 1) * n_teacher // n_student - 1 for i in range(n_student)}


def resolve_map(given: LayerMap | None, n_student: int, n_teacher: int) -> LayerMap:
    """`layer_map` as given (checked against both depths), or the uniform mapping."""
    if given is None:
        return uniform_map(n_student, n_teacher)
    bad = {s: t for s, t in given.items() if not (0 <= s < n_student and 0 <= t < n_teacher)}
    if bad or not given:
        raise ConfigError(
            f"layer_map {given}: needs student blocks in 0..{n_student - 1} mapped to teacher "
            f"blocks in 0..{n_teacher - 1}"
        )
    return dict(sorted(given.items()))


@contextmanager
def block_outputs(backbone: Transformer, layers: Iterable[int]) -> Iterator[dict[int, Tensor]]:
    """The outputs of `backbone.blocks[i]` for i in `layers` while the block runs (forward hooks):
    the backbone itself returns only the final hidden state."""
    seen: dict[int, Tensor] = {}

    def keeper(i: int) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: Tensor) -> None:
            seen[i] = output

        return hook

    handles = [backbone.blocks[i].register_forward_hook(keeper(i)) for i in sorted(set(layers))]
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


@dataclass
class Taught:
    """The teacher's outputs for one micro-batch."""

    logits: Tensor
    """LM logits [B, T, V] or class logits [B, C]."""
    hidden: dict[int, Tensor]
    """Outputs [B, T, D] of the teacher blocks the mapping names."""


class Student(nn.Module):
    """The student as the trainer trains it: its network and the projections of its mapped blocks.

    A projection is a learned linear map to the teacher's width where the widths differ, identity
    where they agree. Calling the module calls the network, so evaluation code sees the student.
    """

    def __init__(self, net: Transformer | MultiTaskModel, layer_map: LayerMap, teacher_width: int):
        super().__init__()
        self.net = net
        self.layer_map = dict(layer_map)
        width = self.backbone.config.d_model
        self.projections = nn.ModuleDict(
            {
                str(s): nn.Linear(width, teacher_width) if width != teacher_width else nn.Identity()
                for s in self.layer_map
            }
        )

    @property
    def backbone(self) -> Transformer:
        """The student's Transformer (also what `Engine` reads the model config from)."""
        return self.net.backbone if isinstance(self.net, MultiTaskModel) else self.net

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.net(*args, **kwargs)

    def capture(self) -> AbstractContextManager[dict[int, Tensor]]:
        return block_outputs(self.backbone, self.layer_map)

    def hidden_mse(self, hidden: dict[int, Tensor], taught: Taught) -> Tensor:
        """Per position [B, T]: the mean over mapped pairs of the squared error averaged over the
        teacher's width, between the projected student block output and the teacher's."""
        errors = [
            (widened(self.projections[str(s)](hidden[s])) - widened(taught.hidden[t])).pow(2).mean(-1)
            for s, t in self.layer_map.items()
        ]
        return torch.stack(errors).mean(0)


def combined(
    settings: DistillLoss,
    student: Student,
    hard: Tensor,
    logits: Tensor,
    hidden: dict[int, Tensor],
    taught: Taught | None,
    mask: Tensor | None = None,
) -> Tensor:
    """Per target (token or example): w_hard * hard + w_kd * soft + w_hidden * hidden MSE.

    `mask` [B, T] (real tokens) averages the hidden term over each example's tokens, for a
    classifier whose targets are examples; without it the hidden term is per token.
    """
    total = settings.w_hard * hard
    if taught is None:
        return total
    if settings.w_kd > 0:
        total = total + settings.w_kd * soft_kl(logits, taught.logits, settings.temperature)
    if settings.w_hidden > 0 and student.layer_map:
        mse = student.hidden_mse(hidden, taught)
        if mask is not None:
            real = mask.to(mse.dtype)
            mse = (mse * real).sum(1) / real.sum(1).clamp(min=1.0)
        total = total + settings.w_hidden * mse
    return total


# -- the objectives and the teacher plug -----------------------------------------------------------


@dataclass
class DistilledLM:
    """Causal LM distillation over the segment stream: every next token is a target, the teacher's
    outputs come from the trainer's teacher plug, and the carry is the student's memory."""

    lm: LanguageModelling
    student: Student
    settings: DistillLoss
    causal = True

    def batch(self, step: int) -> Batch:
        return self.lm.batch(step)

    def count(self, batch: Batch) -> int:
        return self.lm.count(batch)

    def loss(
        self, module: nn.Module, rows: Batch, carry: Any, teacher: Taught | None = None
    ) -> tuple[Tensor, Any]:
        inputs, labels = rows
        with self.student.capture() as hidden:
            out = module(inputs, carry, causal=True)
        logits = widened(out.logits)
        hard = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE, reduction="none")
        per_token = combined(self.settings, self.student, hard, logits, hidden, teacher)
        return per_token[labels != IGNORE].sum(), out.mems


@dataclass
class DistilledClassifier:
    """Classifier distillation: the class logits of the teacher's head, example by example."""

    task: TaskObjective
    student: Student
    settings: DistillLoss
    causal = False

    def batch(self, step: int) -> Batch:
        return self.task.batch(step)

    def count(self, batch: Batch) -> int:
        return self.task.count(batch)

    def loss(
        self, module: nn.Module, rows: Batch, carry: Any, teacher: Taught | None = None
    ) -> tuple[Tensor, None]:
        idx, mask, labels = rows
        with self.student.capture() as hidden:
            _, logits = module(self.task.head, idx, mask)
        logits = widened(logits)
        hard = F.cross_entropy(logits, labels, reduction="none")
        return combined(self.settings, self.student, hard, logits, hidden, teacher, mask).sum(), None


class FrozenTeacher:
    """The trainer's teacher plug: the frozen teacher's logits and mapped block outputs per micro-batch.

    `head` None runs the causal LM with one recurrence memory per micro-batch index (the
    engine calls the plug once per micro-batch, in order; `after_step` starts the count again).
    As a step callback, its state (that memory) goes into every checkpoint.
    """

    name = "teacher"

    def __init__(self, model: nn.Module, backbone: Transformer, layers: Iterable[int], head: str | None):
        self.model, self.backbone, self.layers, self.head = model, backbone, sorted(set(layers)), head
        self.model.eval().requires_grad_(False)
        self.mems: dict[int, list[Tensor]] = {}
        self.micro = 0

    @torch.no_grad()
    def __call__(self, rows: Batch) -> Taught:
        with block_outputs(self.backbone, self.layers) as hidden:
            if self.head is None:
                out = self.model(rows[0], self.mems.get(self.micro), causal=True)
                self.mems[self.micro], logits = out.mems, out.logits
            else:
                _, logits = self.model(self.head, rows[0], rows[1])
        self.micro += 1
        return Taught(logits, dict(hidden))

    def after_step(self, step: int, record: dict[str, Any], engine: Engine) -> dict[str, float]:
        self.micro = 0
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {"mems": self.mems}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = next(self.model.parameters()).device
        self.mems = {int(k): [m.to(device) for m in mems] for k, mems in state["mems"].items()}
        self.micro = 0


# -- how close the student came --------------------------------------------------------------------


class Agreement:
    """Top-1 agreement with the teacher and mean KL(teacher || student) at tau 1, over positions."""

    def __init__(self) -> None:
        self.same, self.kl, self.n = 0.0, 0.0, 0

    def add(self, student: Tensor, teacher: Tensor) -> None:
        self.same += float((student.argmax(-1) == teacher.argmax(-1)).sum())
        self.kl += float(soft_kl(student, teacher, 1.0).sum())
        self.n += student.shape[:-1].numel()

    def result(self) -> dict[str, float]:
        return {"agreement": self.same / max(self.n, 1), "kl": self.kl / max(self.n, 1)}


@torch.no_grad()
def compare_lm(
    student: Transformer, teacher: Transformer, batches: SegmentBatches, segments: int
) -> tuple[dict[str, float], dict[str, float]]:
    """The teacher's validation loss and the student's agreement with it, reading the validation
    segments in order with memory, as `evaluate_lm` reads them for the student."""
    device = next(student.parameters()).device
    student_mems = teacher_mems = None
    agreement, total, count = Agreement(), 0.0, 0
    n = batches.n_segments if segments <= 0 else min(segments, batches.n_segments)
    for i in range(n):
        x, y = (t.to(device) for t in batches.batch(i))
        mine, theirs = student(x, student_mems), teacher(x, teacher_mems)
        student_mems, teacher_mems = mine.mems, theirs.mems
        agreement.add(mine.logits, theirs.logits)
        total += float(summed_loss(theirs.logits, y))
        count += count_targets(y)
    loss = total / max(count, 1)
    return {"loss": loss, "ppl": math.exp(min(loss, 50.0))}, agreement.result()


@torch.no_grad()
def compare_classify(
    student: MultiTaskModel, teacher: MultiTaskModel, head: str, data: Encoded
) -> dict[str, float]:
    """The student's agreement with the teacher's class predictions on `data`."""
    device = next(student.parameters()).device
    agreement = Agreement()
    for start in range(0, len(data.ids), EVAL_BATCH):
        idx, mask, _ = (
            t.to(device) for t in batch(data, range(start, min(start + EVAL_BATCH, len(data.ids))))
        )
        agreement.add(student(head, idx, mask)[1], teacher(head, idx, mask)[1])
    return agreement.result()


# -- the run ---------------------------------------------------------------------------------------


@dataclass
class DistillResult:
    model_dir: Path
    dev: dict[str, float]
    """The student's dev metrics (best weights)."""
    teacher_dev: dict[str, float]
    agreement: dict[str, float]
    """Top-1 agreement with the teacher and KL(teacher || student) on dev."""
    steps: int
    best_step: int | None
    history: list[dict] = field(default_factory=list)


def student_backbone(cfg: DistillConfig, teacher: ModelBundle) -> tuple[Transformer, Path | None]:
    """The student's Transformer and, when it starts from a model folder, that folder.

    A preset takes the teacher's vocabulary, segment and memory lengths unless `student_config`
    says otherwise; a vocabulary other than the teacher's is refused (logits are compared token by
    token).
    """
    vocab = teacher.config.vocab_size
    folder = Path(cfg.student)
    if folder.exists():
        if cfg.student_config:
            raise ConfigError(f"student_config: only for a preset student; {folder} is a model folder")
        student = load_bundle(folder)
        if (
            student.config.vocab_size != vocab
            or student.tokenizer.get_vocab() != teacher.tokenizer.get_vocab()
        ):
            raise ConfigError(
                f"student {folder}: its vocabulary ({student.config.vocab_size} tokens) is not the "
                f"teacher's ({vocab} tokens); distillation needs the teacher's tokenizer"
            )
        return student.model.train(), folder
    if cfg.student not in PRESETS:
        raise ConfigError(
            f"student {cfg.student!r}: neither a model folder nor a preset ({', '.join(PRESETS)})"
        )
    given = cfg.student_config.get("vocab_size", vocab)
    if given != vocab:
        raise ConfigError(
            f"student_config.vocab_size: {given}, but the teacher's vocabulary has {vocab} "
            "tokens; distillation needs the teacher's tokenizer"
        )
    t = teacher.config
    fields = {
        "preset": cfg.student,
        "seq_len": t.seq_len,
        "mem_len": t.mem_len,
        **cfg.student_config,
        "vocab_size": vocab,
    }
    return Transformer(build(ModelConfig, fields, source="student_config")), None


@dataclass
class Plan:
    """What differs between the LM and the classifier: built by `_lm_plan` / `_classify_plan`."""

    net: Transformer | MultiTaskModel
    teacher_model: nn.Module
    head: str | None
    spec: dict[str, Any]
    objective: Callable[[Student], TrainObjective]
    monitor: Callable[[Engine], Monitor]
    compare: Callable[[Student], tuple[dict[str, float], dict[str, float]]]
    """The teacher's dev metrics and the student's agreement with it."""
    parents: list[Path]


def distill(cfg: DistillConfig, resume: str | None = "auto") -> DistillResult:
    """Train the student against the teacher; write its model folder with metrics.json."""
    out = cfg.output
    if out.exists():
        raise ArtifactError(f"{out}: already exists; remove it or choose another name")
    layout = Layout.single(resolve_device(cfg.device))
    seed_everything(cfg.seed)
    teacher = load_bundle(cfg.teacher, layout.device)
    backbone, init = student_backbone(cfg, teacher)
    plan = (_lm_plan if cfg.task == "lm" else _classify_plan)(cfg, teacher, backbone)
    layer_map = (
        resolve_map(cfg.layer_map, backbone.config.n_layers, teacher.config.n_layers)
        if cfg.taught and cfg.w_hidden > 0
        else {}
    )
    with torch.random.fork_rng(devices=[]):  # projections drawn aside: the same init with and without them
        torch.manual_seed(cfg.seed + 1)
        student = Student(plan.net, layer_map, teacher.config.d_model)
    micro = min(cfg.micro_batch_size or cfg.batch_size, cfg.batch_size)
    engine = Engine(student, layout, cfg.batch_size, micro, cfg.precision == "bf16")
    if cfg.compile:
        engine.compile()
    plug = (
        FrozenTeacher(plan.teacher_model, teacher.model, layer_map.values(), plan.head)
        if cfg.taught
        else None
    )
    architecture = {
        "model": to_dict(backbone.config),
        "heads": plan.spec,
        "projections": {str(s): t for s, t in layer_map.items()},
    }
    result = Trainer(
        engine,
        plan.objective(student),
        cfg,
        plan.monitor(engine),
        checkpoint_root(out),
        architecture,
        "distill",
        PlugPoints(teacher=plug, callbacks=[plug] if plug else []),
    ).fit(resume)
    student.eval()
    teacher_dev, agreement = plan.compare(student)
    metrics = {
        "task": cfg.task,
        "steps": result.steps,
        "best_step": result.best_step,
        "dev": result.last,
        "teacher": {"dev": teacher_dev},
        "agreement": agreement,
    }
    heads = plan.net.heads if isinstance(plan.net, MultiTaskModel) else None
    save_model_folder(
        out,
        backbone,
        backbone.config,
        cfg.teacher,
        plan.spec,
        config_used=to_dict(cfg.model_copy(update={"layer_map": layer_map})),
        stage="distill",
        head_modules=heads,
        parents=[cfg.teacher, *([init] if init else []), *plan.parents],
        files={"metrics.json": metrics},
    )
    return DistillResult(
        out, result.last, teacher_dev, agreement, result.steps, result.best_step, result.history
    )


def _teacher_tokens(cfg: DistillConfig) -> Path:
    """`data`, or the packed tokens the teacher was pretrained on (its manifest's config)."""
    if cfg.data is not None:
        return cfg.data
    tokens = read_manifest(cfg.teacher).get("config", {}).get("data", {}).get("tokens")
    if not tokens or not Path(tokens).is_dir():
        where = f"names {tokens}, which is not a folder" if tokens else "names no packed tokens"
        raise ConfigError(f"data: the teacher's manifest {where}; give the packed token folder with --data")
    return Path(tokens)


def _lm_plan(cfg: DistillConfig, teacher: ModelBundle, backbone: Transformer) -> Plan:
    if teacher.lm_task() != "causal_lm":
        raise ArtifactError(
            f"{cfg.teacher}: task lm needs a causal LM teacher (heads: {', '.join(teacher.spec)})"
        )
    tokens = _teacher_tokens(cfg)
    seq_len = backbone.config.seq_len
    train = SegmentBatches(TokenStream(tokens, "train"), cfg.batch_size, seq_len)
    stream = TokenStream(tokens, "val")
    val = SegmentBatches(stream, max(1, min(cfg.batch_size, len(stream) // (seq_len + 1))), seq_len)
    masking = Objective(kind="causal")

    def monitor(engine: Engine) -> Monitor:
        return Monitor(
            lambda: evaluate_lm(engine, val, masking, cfg.eval_segments, (0, len(val.rows))),
            metric="loss",
            on_plateau="stop",
            patience=cfg.patience,
            keep_best=True,
        )

    return Plan(
        net=backbone,
        teacher_model=teacher.model,
        head=None,
        spec={"lm": {"task": "causal_lm"}},
        objective=lambda student: DistilledLM(LanguageModelling(masking, train), student, cfg),
        monitor=monitor,
        compare=lambda student: compare_lm(student.net, teacher.model, val, cfg.eval_segments),
        parents=[tokens],
    )


def _classify_plan(cfg: DistillConfig, teacher: ModelBundle, backbone: Transformer) -> Plan:
    heads = [name for name, entry in teacher.spec.items() if entry["task"] == "classify"]
    if cfg.head is None and len(heads) != 1:
        raise ConfigError(
            f"head: {cfg.teacher} has {len(heads)} classify heads ({', '.join(heads) or 'none'}); "
            "name the one to distil"
        )
    name = cfg.head or heads[0]
    entry, usage = teacher.head(name, "classify"), teacher.usage(name)
    if cfg.data is None:
        raise ConfigError("data: task classify needs a training file (--data)")
    causal, max_len = usage.get("causal", False), usage.get("max_len", teacher.config.seq_len)
    columns = {
        "text_column": usage.get("text_column", "text") if cfg.text_column is None else cfg.text_column,
        "label_column": usage.get("label_column", "label") if cfg.label_column is None else cfg.label_column,
    }
    settings = TaskSettings(
        task="classify",
        head=name,
        data=TaskData(train=cfg.data, dev=cfg.dev, dev_fraction=cfg.dev_fraction, **columns),
    )
    task = _read_task(settings, entry["labels"], teacher, max_len, cfg.seed)
    net = MultiTaskModel(backbone, build_heads({name: entry}, backbone.config.d_model), causal=causal)
    teacher_model = teacher.task_model(name)

    def monitor(engine: Engine) -> Monitor:
        return Monitor(
            lambda: task.score(engine.module, "dev", teacher.tokenizer, max_len),
            metric="accuracy",
            higher_is_better=True,
            on_plateau="stop",
            patience=cfg.patience,
            keep_best=True,
        )

    def compare(student: Student) -> tuple[dict[str, float], dict[str, float]]:
        return (
            task.score(teacher_model, "dev", teacher.tokenizer, max_len),
            compare_classify(student.net, teacher_model, name, task.splits["dev"].encoded),
        )

    train = task.splits["train"].encoded
    return Plan(
        net=net,
        teacher_model=teacher_model,
        head=name,
        spec=output_spec({}, net.heads, [task], causal, max_len),
        objective=lambda student: DistilledClassifier(
            TaskObjective(name, "classify", train, cfg.batch_size, cfg.seed), student, cfg
        ),
        monitor=monitor,
        compare=compare,
        parents=[p for p in (cfg.data, cfg.dev) if p],
    )


def _read_task(
    settings: TaskSettings, labels: list[str], teacher: ModelBundle, max_len: int, seed: int
) -> TaskSplits:
    """The task's train and dev splits, encoded with the teacher's label set (a label the teacher
    does not know is a DataError naming it)."""
    d = settings.data
    train = read_examples(d.train, "classify", d.text_column, d.label_column)
    if d.dev is None:
        train, dev = hold_out(train, d.dev_fraction, seed)
    else:
        dev = read_examples(d.dev, "classify", d.text_column, d.label_column)
    return TaskSplits(
        settings,
        labels,
        {
            name: Split(examples, encode_examples(teacher.tokenizer, examples, "classify", labels, max_len))
            for name, examples in (("train", train), ("dev", dev))
        },
    )
