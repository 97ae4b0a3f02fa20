"""Pretraining (causal or masked LM) as a configuration of the one trainer.

One optimizer step reads batch `step` of the segment stream (a pure function of the step) and
runs it as micro-batches that each carry their own recurrence memory; validation reads the
validation stream in order with memory; a plateau of the validation loss cuts the rate x0.1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lmforge.artifacts import load_tokenizer
from lmforge.config import to_dict
from lmforge.device import resolve_device
from lmforge.model import ModelConfig, Transformer, flops_per_token
from lmforge.model.folder import save_model_folder
from lmforge.parallel import Layout
from lmforge.tokenizer import SPECIAL_TOKENS, SegmentBatches, TokenStream
from lmforge.train.checkpoint import latest_checkpoint, read_weights
from lmforge.train.config import PretrainConfig
from lmforge.train.engine import Engine
from lmforge.train.metrics import measure_peak_gflops
from lmforge.train.objectives import LanguageModelling, Objective, count_targets, summed_loss
from lmforge.train.trainer import Monitor, PlugPoints, Trainer, apply_transforms, seed_everything

EVAL_DRAW_OFFSET = 10**9  # masks drawn for evaluation never coincide with training draws


@dataclass
class PretrainResult:
    model_dir: Path
    checkpoint_dir: Path
    val_loss_before: float | None
    val_loss_after: float
    steps: int

    @property
    def ppl_before(self) -> float | None:
        return None if self.val_loss_before is None else math.exp(self.val_loss_before)

    @property
    def ppl_after(self) -> float:
        return math.exp(self.val_loss_after)


@torch.no_grad()
def evaluate_lm(engine: Engine, batches: SegmentBatches, masking: Objective, max_segments: int,
                rows: tuple[int, int]) -> dict[str, float]:
    """Mean validation loss over the global batch, reading segments in order with memory."""
    engine.module.eval()
    total, count, mems = 0.0, 0, None
    n = batches.n_segments if max_segments <= 0 else min(max_segments, batches.n_segments)
    for i in range(n):
        x, y = batches.batch(i)
        inputs, labels = engine.to_device(masking.prepare(x, y, EVAL_DRAW_OFFSET + i, rows))
        if engine.stage is not None:
            engine.scale = 1.0
            loss_sum, mems = engine._pipeline_step((inputs, labels), mems, masking.causal, train=False)
        else:
            with engine.autocast():
                out = engine.module(inputs, mems[0] if mems else None, causal=masking.causal)
            mems = [out.mems]
            loss_sum = float(summed_loss(out.logits, labels))
        total += loss_sum
        count += count_targets(labels)
    engine.module.train()
    total, count = engine.global_sum([total, float(count)])
    loss = total / max(count, 1.0)
    return {"loss": loss, "ppl": math.exp(min(loss, 50.0)), "tokens": count}


class Throughput:
    """Step callback: tokens/s and model FLOPs utilisation for the log and the progress bar."""

    name = "throughput"

    def __init__(self, tokens_per_step: int, flops_per_token: float, peak_flops: float):
        self.tokens_per_step, self.flops, self.peak = tokens_per_step, flops_per_token, peak_flops

    def after_step(self, step: int, record: dict[str, Any], engine: Engine) -> dict[str, float]:
        tok_s = self.tokens_per_step / record["seconds"]
        return {"tokens_per_s": tok_s, "mfu": tok_s * self.flops / self.peak}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Nothing to restore: throughput is measured afresh."""


def pretrain(cfg: PretrainConfig, resume: str | None = "auto", layout: Layout | None = None,
             plugs: PlugPoints | None = None) -> PretrainResult:
    """Train `cfg.model` on packed tokens; write checkpoints and the final model folder.

    `layout` is this rank's place in a parallel run (see `lmforge.parallel`); None = one process
    on `cfg.train.device`. Every rank calls this; rank 0 writes the logs and the model folder.
    """
    s = cfg.train
    layout = layout or Layout.single(resolve_device(s.device))
    tokenizer = load_tokenizer(cfg.data.tokenizer)
    vocab = tokenizer.get_vocab_size()
    model_config = cfg.model.model_copy(update={"vocab_size": vocab})
    seed_everything(s.seed)
    plugs = plugs or PlugPoints()
    model = apply_transforms(Transformer(model_config), plugs.transforms)
    dp = layout.settings.dp
    local = s.batch_size // dp
    engine = Engine(model, layout, local, min(s.micro_batch_size or local, local), s.precision == "bf16")
    if s.compile:
        engine.compile()
    if layout.distributed:  # same weights everywhere, but each dp slice and stage its own dropout masks
        torch.manual_seed(s.seed + 1_000_003 * (1 + layout.random_stream))
    special = tuple(tokenizer.token_to_id(t) for t in SPECIAL_TOKENS)
    masking = Objective(kind=s.objective, mask_id=tokenizer.token_to_id("<mask>"), vocab_size=vocab,
                        special_ids=special, mask_prob=s.mask_prob, seed=s.seed)
    train = SegmentBatches(TokenStream(cfg.data.tokens, "train"), s.batch_size, model_config.seq_len,
                           layout.dp_rank, dp)
    val = _validation_batches(cfg, layout, model_config)
    objective = LanguageModelling(masking, train, _rows(train, dp))
    monitor = Monitor(lambda: evaluate_lm(engine, val, masking, s.eval_segments, _rows(val, dp)),
                      metric="loss", on_plateau="cut_lr", patience=s.plateau_patience,
                      factor=s.plateau_factor)
    peak = (s.peak_gflops or measure_peak_gflops()) * 1e9 * layout.world
    throughput = Throughput(s.batch_size * model_config.seq_len, flops_per_token(model_config), peak)
    plugs.callbacks = [throughput, *plugs.callbacks]
    ckpt_root = cfg.out / "checkpoints" / cfg.name
    trainer = Trainer(engine, objective, s, monitor, ckpt_root, to_dict(model_config), cfg.name, plugs,
                      progress=lambda r: {"tok_s": f"{r['tokens_per_s']:,.0f}", "mfu": f"{r['mfu']:.0%}"})
    result = trainer.fit(resume)
    model_dir = cfg.out / "models" / cfg.name
    if layout.rank == 0:
        final = Transformer(model_config)
        final.load_state_dict(read_weights(latest_checkpoint(ckpt_root)))
        save_model_folder(
            model_dir, final, model_config, cfg.data.tokenizer,
            heads={"lm": {"task": "causal_lm" if masking.causal else "masked_lm"}},
            config_used=to_dict(cfg), parents=[cfg.data.tokens, cfg.data.tokenizer],
            extra={"val_loss": result.last["loss"], "val_ppl": result.last["ppl"], "steps": result.steps},
        )
    before = result.first["loss"] if result.first else None
    return PretrainResult(model_dir, ckpt_root, before, result.last["loss"], result.steps)


def _validation_batches(cfg: PretrainConfig, layout: Layout, model_config: ModelConfig) -> SegmentBatches:
    s, dp = cfg.train, layout.settings.dp
    stream = TokenStream(cfg.data.tokens, "val")
    if layout.settings.pp > 1:  # the pipeline schedule cuts every batch into the same micro-batches
        batch = s.batch_size
    else:
        batch = max(dp, min(s.batch_size, len(stream) // (model_config.seq_len + 1)) // dp * dp)
    return SegmentBatches(stream, batch, model_config.seq_len, layout.dp_rank, dp)


def _rows(batches: SegmentBatches, dp: int) -> tuple[int, int]:
    """(first row, global rows) of this rank's slice of `batches`."""
    return batches.rows.start, len(batches.rows) * dp


def perplexity(model: Transformer, tokens: Path, segments: int, batch_size: int = 8) -> dict[str, float]:
    """Causal-LM loss and perplexity of `model` (on its device) over the validation split of a packed
    token folder, read in order with memory, as pretraining's own evaluation reads it."""
    device = next(model.parameters()).device
    engine = Engine(model, Layout.single(device), batch_size, batch_size, bf16=False)
    stream = TokenStream(tokens, "val")
    batch = max(1, min(batch_size, len(stream) // (model.config.seq_len + 1)))
    result = evaluate_lm(engine, SegmentBatches(stream, batch, model.config.seq_len), Objective("causal"),
                         segments, (0, batch))
    model.eval()
    return result
