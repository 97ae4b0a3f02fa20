"""Pruning (`lmforge prune`): L1-regularised fine-tuning through the trainer, then pruning.

1. Fine-tune on the model's own task (its LM data, or its head's task file) with `L1Penalty`
   on the weights about to be pruned, through the trainer's regulariser plug point: the penalty
   drives unimportant weights towards zero, so removing them afterwards costs less.
2. Prune. `unstructured`: global L1 magnitude pruning of every block matrix
   (`torch.nn.utils.prune`), masks folded in (`prune.remove`) so the folder holds plain weights
   with zeros: same shapes, so no smaller or faster on a dense runtime (only compressible).
   `heads` / `ffn`: remove the least important attention heads / MLP neurons and slice the
   matrices (q/k/v rows, o columns and the XL position rows and biases of a head; the MLP's input
   rows and output columns of a neuron), so the model is smaller and faster everywhere; the
   folder's config.json carries the new widths (`layer_heads`, `layer_d_ff`).

Importance (structured modes): Michel et al. (2019), "Are Sixteen Heads Really Better than One?":
a unit's importance is |dL/d xi| for a gate xi = 1 on its output, summed over a few training
batches and normalised per layer (their l2 normalisation, which makes a global ranking fair
across layers). dL/d xi is the dot product of the unit's output with the loss gradient there
(the input of W_o or of the MLP's output matrix), so hooks measure it without changing the
model. It is chosen over the l2 norm of a head's weight slices because it measures what removal
does to the loss on the model's own data; a weight norm ignores the inputs and the other heads.
The same first-order measure ranks MLP neurons (Molchanov et al. 2017's Taylor criterion).

Every layer keeps its most important head (neuron): a sparsity that would need to remove every
head of some layer is refused before any work is done.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_model as save_safetensors
from torch import Tensor, nn
from torch.nn.utils import prune as torch_prune

from lmforge.artifacts import ArtifactError, read_manifest
from lmforge.compress.prune_config import PruneConfig, PruneMode
from lmforge.config import ConfigError, to_dict
from lmforge.device import resolve_device
from lmforge.model.bundle import ModelBundle, load_bundle
from lmforge.model.config import ModelConfig
from lmforge.model.folder import save_model_folder
from lmforge.model.heads import LM_TASKS, MultiTaskModel
from lmforge.model.xl import Transformer
from lmforge.parallel import Layout
from lmforge.tokenizer import SPECIAL_TOKENS, SegmentBatches, TokenStream
from lmforge.train.engine import Engine, TrainObjective
from lmforge.train.finetune import TaskSplits, dev_metric
from lmforge.train.finetune_config import TaskData, TaskSettings
from lmforge.train.objectives import LanguageModelling, Objective
from lmforge.train.pretrain import evaluate_lm
from lmforge.train.regularisers import L1Penalty
from lmforge.train.task_objective import TaskObjective
from lmforge.train.trainer import PlugPoints, Trainer, seed_everything

PRUNED = {
    "unstructured": ("attn.wq", "attn.wk", "attn.wv", "attn.wo", "attn.core.r_proj", "mlp.w_in", "mlp.w_out"),
    "heads": ("attn.wq", "attn.wk", "attn.wv", "attn.wo", "attn.core.r_proj"),
    "ffn": ("mlp.w_in", "mlp.w_out"),
}
"""Per mode, the block matrices whose weights are pruned (and L1-penalised before)."""

IMPORTANCE = {
    "unstructured": "weight magnitude |w|, ranked globally over the block matrices (L1Unstructured)",
    "heads": "Michel et al. 2019: |dL/d head gate| summed over batches, l2-normalised per layer",
    "ffn": "first-order Taylor |dL/d neuron gate| summed over batches, l2-normalised per layer",
}


def selects(mode: PruneMode) -> Callable[[str], bool]:
    """Whether a parameter name is one of `mode`'s pruned weights (bare backbone or task model)."""
    suffixes = tuple(f"{module}.weight" for module in PRUNED[mode])
    return lambda name: name.endswith(suffixes)


@dataclass
class LMTask:
    """Pruning for a causal or masked LM: its packed token stream, validation loss as the metric."""

    masking: Objective
    train: SegmentBatches
    val: SegmentBatches
    segments: int
    data: dict[str, Any]
    metric = "loss"

    def wrap(self, backbone: Transformer) -> nn.Module:
        return backbone

    def objective(self, cfg: PruneConfig) -> TrainObjective:
        return LanguageModelling(self.masking, self.train)

    def score(self, module: nn.Module) -> dict[str, float]:
        device = next(module.parameters()).device
        engine = Engine(module, Layout.single(device), len(self.val.rows), len(self.val.rows), bf16=False)
        rows = (0, len(self.val.rows))
        return evaluate_lm(engine, self.val, self.masking, self.segments, rows)


@dataclass
class HeadTask:
    """Pruning for a task head: its training file, the head's dev metric (accuracy, F1, recall@k)."""

    bundle: ModelBundle
    head: str
    splits: TaskSplits
    data: dict[str, Any]

    @property
    def metric(self) -> str:
        return dev_metric(self.splits.settings.task, self.splits.settings.k)

    def wrap(self, backbone: Transformer) -> nn.Module:
        causal = self.bundle.usage(self.head).get("causal", False)
        return MultiTaskModel(backbone, self.bundle.heads, causal=causal)

    def objective(self, cfg: PruneConfig) -> TrainObjective:
        train = self.splits.splits["train"].encoded
        return TaskObjective(self.head, self.splits.settings.task, train, cfg.batch_size, cfg.seed)

    def score(self, module: nn.Module) -> dict[str, float]:
        max_len = self.bundle.usage(self.head).get("max_len", self.bundle.config.seq_len)
        return self.splits.score(module, "dev", self.bundle.tokenizer, max_len)


Task = LMTask | HeadTask


def open_task(bundle: ModelBundle, cfg: PruneConfig) -> Task:
    """The task `cfg.head` (or the folder's only one) with its data: `cfg.data`, else the manifest's."""
    task_heads = [name for name, entry in bundle.spec.items() if entry["task"] not in LM_TASKS]
    if cfg.head is None and len(task_heads) > 1:
        raise ConfigError(
            f"head: {cfg.model} has several task heads ({', '.join(task_heads)}); say which one to prune for"
        )
    head = cfg.head or (task_heads[0] if task_heads else next(iter(bundle.spec)))
    entry = bundle.head(head)
    recorded = _recorded_data(read_manifest(cfg.model).get("config", {}), head) or {}
    is_lm = entry["task"] in LM_TASKS
    if cfg.data is None and ("tokens" if is_lm else "train") not in recorded:
        raise ConfigError(
            f"data: {cfg.model}'s manifest records no training data for head {head!r}; give --data"
        )
    if is_lm:
        return _lm_task(bundle, entry["task"], Path(cfg.data or recorded["tokens"]), cfg)
    usage = bundle.usage(head)
    columns = {key: usage[key] for key in ("text_column", "label_column") if key in usage}
    data = TaskData.model_validate(
        {**recorded, **columns} if cfg.data is None else {"train": cfg.data, **columns}
    )
    settings = TaskSettings(task=entry["task"], data=data, head=head, k=usage.get("k", 1))
    max_len = usage.get("max_len", bundle.config.seq_len)
    splits = TaskSplits.read(settings, bundle.tokenizer, max_len, cfg.seed)
    if entry.get("labels", []) != splits.labels:
        raise ConfigError(
            f"data: the labels of {data.train} ({', '.join(splits.labels)}) are not head "
            f"{head!r}'s ({', '.join(entry.get('labels', []))})"
        )
    return HeadTask(bundle, head, splits, to_dict(data))


def _recorded_data(config: dict[str, Any], head: str) -> dict[str, Any] | None:
    """The data a model folder was trained on, from its manifest's config (multi-task: by head)."""
    for task in config.get("tasks", []):
        if (task.get("head") or task.get("task")) == head:
            return task.get("data")
    return config.get("data")


def _lm_task(bundle: ModelBundle, task: str, tokens: Path, cfg: PruneConfig) -> LMTask:
    tokenizer, seq_len = bundle.tokenizer, bundle.config.seq_len
    special = tuple(tokenizer.token_to_id(t) for t in SPECIAL_TOKENS)
    kind = "causal" if task == "causal_lm" else "masked"
    masking = Objective(
        kind=kind,
        mask_id=tokenizer.token_to_id("<mask>"),
        special_ids=special,
        vocab_size=tokenizer.get_vocab_size(),
        seed=cfg.seed,
    )
    val = TokenStream(tokens, "val")
    val_batch = max(1, min(cfg.batch_size, len(val) // (seq_len + 1)))
    return LMTask(
        masking,
        SegmentBatches(TokenStream(tokens, "train"), cfg.batch_size, seq_len),
        SegmentBatches(val, val_batch, seq_len),
        cfg.eval_segments,
        {"tokens": str(tokens)},
    )


def unit_counts(config: ModelConfig, mode: PruneMode) -> list[int]:
    """Heads (heads mode) or MLP neurons (ffn mode) of every layer."""
    at = config.heads_at if mode == "heads" else config.d_ff_at
    return [at(layer) for layer in range(config.n_layers)]


def units_to_remove(config: ModelConfig, mode: PruneMode, sparsity: float) -> int:
    """round(sparsity x all units); refused when a layer would be left without any."""
    counts = unit_counts(config, mode)
    total, n = sum(counts), round(sparsity * sum(counts))
    if n > total - len(counts):
        unit = "heads" if mode == "heads" else "MLP neurons"
        most = total - len(counts)
        raise ConfigError(
            f"sparsity: {sparsity} removes {n} of {total} {unit}, which would leave a layer "
            f"with none; every layer keeps one, so at most {most} ({most / total:.0%}) can go"
        )
    return n


def unit_importance(
    module: nn.Module,
    blocks: nn.ModuleList,
    objective: TrainObjective,
    batches: int,
    mode: PruneMode,
    head_dim: int,
) -> list[Tensor]:
    """Per layer, each head's (neuron's) |dL/d gate| summed over `batches` training batches, l2-normalised.

    A gate xi = 1 scaling unit u's output x_u gives dL/dxi = sum over tokens of <x_u, dL/dx_u>,
    read at the input of W_o (heads, `head_dim` columns each) or of the MLP's output matrix.
    """
    layers = [block.attn.wo if mode == "heads" else block.mlp.w_out for block in blocks]
    width = head_dim if mode == "heads" else 1
    scores = [torch.zeros(layer.in_features // width, dtype=torch.float64) for layer in layers]
    gates: list[Tensor | None] = [None] * len(layers)

    def watch(i: int):
        def hook(_: nn.Module, args: tuple[Tensor, ...]) -> None:
            x = args[0]

            def grad(g: Tensor) -> None:
                gates[i] = (x.detach() * g).flatten(0, -2).unflatten(-1, (-1, width)).sum((0, 2))

            x.register_hook(grad)

        return hook

    handles = [layer.register_forward_pre_hook(watch(i)) for i, layer in enumerate(layers)]
    device = next(module.parameters()).device
    rows = objective.batch(0)[0].size(0)
    engine = Engine(module, Layout.single(device), rows, rows, bf16=False)  # the trainer's gradients
    module.eval()  # no dropout: the importance of the model as it will run
    carry = None
    try:
        for step in range(batches):
            _, carry, _ = engine.forward_backward(objective, objective.batch(step), carry)
            for i, gate in enumerate(gates):  # None: the batch never ran the model (no NER target)
                if gate is not None:
                    scores[i] += gate.abs().double().cpu()
                gates[i] = None
    finally:
        for handle in handles:
            handle.remove()
        module.zero_grad(set_to_none=True)
        module.train()
    return [nn.functional.normalize(score, dim=0) for score in scores]


def keep_plan(scores: list[Tensor], n_remove: int) -> list[list[int]]:
    """Per layer, the unit indices kept when the `n_remove` globally least important go; each
    layer's most important unit is never a candidate, so no layer is emptied."""
    protected = {(i, int(score.argmax())) for i, score in enumerate(scores)}
    candidates = sorted(
        (float(value), i, j)
        for i, score in enumerate(scores)
        for j, value in enumerate(score)
        if (i, j) not in protected
    )
    removed = {(i, j) for _, i, j in candidates[:n_remove]}
    return [[j for j in range(len(score)) if (i, j) not in removed] for i, score in enumerate(scores)]


def shrink(model: Transformer, mode: PruneMode, keep: list[list[int]]) -> Transformer:
    """A new backbone holding only the `keep` heads (neurons) of every layer, weights sliced from `model`.

    Strict loading into a model built from the new config checks that every slice fits it.
    """
    config, state = model.config, dict(model.state_dict())
    head_dim = config.head_dim
    for layer, units in enumerate(keep):
        index = torch.tensor(units, dtype=torch.long, device=model.tok_emb.weight.device)
        if mode == "heads":
            index = (index[:, None] * head_dim + torch.arange(head_dim, device=index.device)).flatten()
            rows = (
                "attn.wq.weight",
                "attn.wq.bias",
                "attn.wk.weight",
                "attn.wk.bias",
                "attn.wv.weight",
                "attn.wv.bias",
                "attn.core.r_proj.weight",
                "attn.core.u",
                "attn.core.v",
            )
            columns = ("attn.wo.weight",)
        else:
            rows, columns = ("mlp.w_in.weight", "mlp.w_in.bias"), ("mlp.w_out.weight",)
        for name in (f"blocks.{layer}.{n}" for n in rows):
            if name in state:  # the position parameters exist for xl positions only
                state[name] = state[name].index_select(0, index)
        for name in (f"blocks.{layer}.{n}" for n in columns):
            state[name] = state[name].index_select(1, index)
    field = "layer_heads" if mode == "heads" else "layer_d_ff"
    shape = ModelConfig.model_validate({**config.model_dump(), field: [len(units) for units in keep]})
    pruned = Transformer(shape).to(model.tok_emb.weight.device, model.tok_emb.weight.dtype)
    pruned.load_state_dict(state)
    return pruned.train(model.training)


def magnitude_prune(model: Transformer, sparsity: float) -> None:
    """Zero the `sparsity` share of smallest-magnitude weights over all block matrices, masks folded in."""
    select = selects("unstructured")
    targets = [
        (module, "weight")
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and select(f"{name}.weight")
    ]
    torch_prune.global_unstructured(targets, pruning_method=torch_prune.L1Unstructured, amount=sparsity)
    for module, name in targets:
        torch_prune.remove(module, name)


def zero_share(model: nn.Module, mode: PruneMode) -> float:
    """Share of exact zeros among `mode`'s pruned weights."""
    select = selects(mode)
    weights = [p for name, p in model.named_parameters() if select(name)]
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


def safetensors_bytes(model: nn.Module) -> int:
    """Size of `model` written as the model folder writes it."""
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "model.safetensors"
        save_safetensors(model, str(file))
        return file.stat().st_size


@dataclass
class PruneResult:
    model_dir: Path
    metrics: dict[str, Any]


def prune(cfg: PruneConfig) -> PruneResult:
    """L1-fine-tune `cfg.model` on its task, prune it, write the output folder with metrics.json.

    Every refusal (output exists, not a model folder, a quantised model, a layer left without
    heads, no training data) comes before any training, and the folder is written atomically.
    """
    out = cfg.output
    if out.exists():
        raise ArtifactError(f"{out}: already exists; remove it or choose another name")
    device = resolve_device(cfg.device)
    bundle = load_bundle(cfg.model, device)
    if bundle.config.quantization is not None:
        raise ArtifactError(f"{cfg.model}: a quantised model; prune the float model, then quantise")
    n_remove = units_to_remove(bundle.config, cfg.mode, cfg.sparsity) if cfg.mode != "unstructured" else 0
    task = open_task(bundle, cfg)
    seed_everything(cfg.seed)
    module = task.wrap(bundle.model)
    before, parameters = task.score(module), bundle.model.num_parameters()
    if cfg.steps:
        micro = cfg.micro_batch_size or cfg.batch_size
        engine = Engine(module, Layout.single(device), cfg.batch_size, micro, cfg.precision == "bf16")
        if cfg.compile:
            engine.compile()
        plugs = PlugPoints(regularisers=[L1Penalty(cfg.l1, selects(cfg.mode))] if cfg.l1 else [])
        Trainer(engine, task.objective(cfg), cfg, None, None, {}, f"prune {cfg.mode}", plugs).fit(resume=None)
    tuned = task.score(module) if cfg.steps else before
    backbone, pruned = _pruned(module, bundle.model, task, cfg, n_remove)
    metrics = {
        "mode": cfg.mode,
        "metric": task.metric,
        "sparsity_asked": cfg.sparsity,
        **pruned,
        "importance": IMPORTANCE[cfg.mode],
        "dev": {"before": before, "after_l1": tuned, "after": task.score(task.wrap(backbone))},
        "parameters": {"before": parameters, "after": backbone.num_parameters()},
        "size_bytes": {
            "before": (cfg.model / "model.safetensors").stat().st_size,
            "after": safetensors_bytes(backbone),
        },
    }
    used = {**to_dict(cfg), "data": task.data, "importance": IMPORTANCE[cfg.mode]}
    backbone, heads = backbone.cpu(), bundle.heads.cpu()
    save_model_folder(
        out,
        backbone,
        backbone.config,
        cfg.model,
        bundle.spec,
        config_used=used,
        parents=[cfg.model],
        stage="prune",
        head_modules=heads,
        files={"metrics.json": metrics},
    )
    return PruneResult(out, metrics)


def _pruned(
    module: nn.Module, backbone: Transformer, task: Task, cfg: PruneConfig, n_remove: int
) -> tuple[Transformer, dict[str, Any]]:
    """The pruned backbone (in eval mode) and what was removed: the zero share, or the units kept."""
    if cfg.mode == "unstructured":
        magnitude_prune(backbone, cfg.sparsity)
        return backbone.eval(), {"sparsity": zero_share(backbone, "unstructured")}
    objective = task.objective(cfg)
    head_dim = backbone.config.head_dim
    scores = unit_importance(module, backbone.blocks, objective, cfg.importance_batches, cfg.mode, head_dim)
    total = sum(unit_counts(backbone.config, cfg.mode))
    backbone = shrink(backbone, cfg.mode, keep_plan(scores, n_remove))
    return backbone.eval(), {"sparsity": n_remove / total, "kept": unit_counts(backbone.config, cfg.mode)}
