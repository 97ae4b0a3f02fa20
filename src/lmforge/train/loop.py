"""The pretraining loop: AdamW, clipping, token-normalised accumulation, S4 schedule, resume.

One optimizer step reads batch `step` of the segment stream (a pure function of the step), runs
it as micro-batches that each carry their own recurrence memory, divides every micro-batch's
summed loss by the target count of the *whole* batch, clips, and steps. Everything a step
depends on (weights, moments, memory, RNG, plateau) is in the checkpoint, so a resumed run
continues the same trajectory.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer
from tqdm import tqdm

from lmforge.config import to_dict
from lmforge.model import ModelConfig, Transformer, flops_per_token
from lmforge.model.folder import save_model_folder, tokenizer_file
from lmforge.parallel import Layout
from lmforge.tokenizer import SPECIAL_TOKENS, SegmentBatches, TokenStream
from lmforge.train.checkpoint import (
    CheckpointError,
    TrainerState,
    latest_checkpoint,
    load_checkpoint,
    read_weights,
    save_checkpoint,
)
from lmforge.train.config import PretrainConfig, TrainSettings
from lmforge.train.engine import Engine, Mems
from lmforge.train.metrics import MetricsLog, measure_peak_gflops
from lmforge.train.objectives import Objective, count_targets
from lmforge.train.schedule import Plateau, warmup_cosine


class TrainingDiverged(RuntimeError):
    """The loss became NaN/inf; the run stopped without writing the bad weights."""


@dataclass
class PretrainResult:
    model_dir: Path
    checkpoint_dir: Path
    val_loss_before: float | None
    val_loss_after: float
    steps: int
    history: list[dict] = field(default_factory=list)

    @property
    def ppl_before(self) -> float | None:
        return None if self.val_loss_before is None else math.exp(self.val_loss_before)

    @property
    def ppl_after(self) -> float:
        return math.exp(self.val_loss_after)


def adamw(model: torch.nn.Module, lr: float, weight_decay: float,
          betas: tuple[float, float] = (0.9, 0.999), foreach: bool = True) -> torch.optim.AdamW:
    """AdamW with decay on matrices only: decaying gains, biases and u/v offsets only hurts."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # foreach kernels cannot mix the DTensor and plain parameters of a sharded model.
    return torch.optim.AdamW(groups, lr=lr, betas=betas, foreach=foreach)


def seed_everything(seed: int) -> None:
    """Seed torch, NumPy and Python's `random`: the checkpoint stores all three, so a run started
    twice (or resumed) must not carry whatever state the process happened to start with."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def build_optimizer(model: torch.nn.Module, settings: TrainSettings) -> torch.optim.AdamW:
    return adamw(model, settings.lr, settings.weight_decay, settings.betas)


def accumulate_gradients(model: Transformer, objective: Objective, x: torch.Tensor, y: torch.Tensor,
                         micro_batch_size: int, mems: Mems | None, draw: int,
                         bf16: bool = False) -> tuple[float, int, Mems]:
    """Backward over the micro-batches of one batch on one device; returns mean loss, targets, new mems.

    Targets are made for the whole batch first: their total is the normaliser, and the masks
    must not depend on how the batch is split.
    """
    engine = Engine(model, Layout.single(), x.shape[0], micro_batch_size, bf16)
    inputs, labels = objective.prepare(x, y, draw)
    loss, new_mems = engine.forward_backward(inputs, labels, mems, objective.causal)
    return loss, max(count_targets(labels), 1), new_mems


@dataclass
class _Run:
    """Everything the loop touches, built once from the config for this rank."""

    cfg: PretrainConfig
    model_config: ModelConfig
    engine: Engine
    optimizer: torch.optim.AdamW
    objective: Objective
    train: SegmentBatches
    val: SegmentBatches
    ckpt_root: Path

    @property
    def settings(self) -> TrainSettings:
        return self.cfg.train

    @property
    def layout(self) -> Layout:
        return self.engine.layout

    def rows(self, batches: SegmentBatches) -> tuple[int, int]:
        """(first row, global rows) of this rank's slice of `batches`."""
        return batches.rows.start, len(batches.rows) * self.layout.settings.dp


def _build(cfg: PretrainConfig, layout: Layout) -> _Run:
    tokenizer = Tokenizer.from_file(str(tokenizer_file(cfg.data.tokenizer)))
    vocab = tokenizer.get_vocab_size()
    model_config = cfg.model.model_copy(update={"vocab_size": vocab})
    s, dp = cfg.train, layout.settings.dp
    seed_everything(s.seed)
    model = Transformer(model_config)
    local = s.batch_size // dp
    engine = Engine(model, layout, local, min(s.micro_batch_size or local, local), s.precision == "bf16")
    if layout.distributed:  # same weights everywhere, but each dp slice and stage its own dropout masks
        torch.manual_seed(s.seed + 1_000_003 * (1 + layout.random_stream))
    special = tuple(tokenizer.token_to_id(t) for t in SPECIAL_TOKENS)
    objective = Objective(kind=s.objective, mask_id=tokenizer.token_to_id("<mask>"), vocab_size=vocab,
                          special_ids=special, mask_prob=s.mask_prob, seed=s.seed)
    train = SegmentBatches(TokenStream(cfg.data.tokens, "train"), s.batch_size, model_config.seq_len,
                           layout.dp_rank, dp)
    val_stream = TokenStream(cfg.data.tokens, "val")
    if layout.settings.pp > 1:  # the pipeline schedule cuts every batch into the same micro-batches
        val_batch = s.batch_size
    else:
        val_batch = max(dp, min(s.batch_size, len(val_stream) // (model_config.seq_len + 1)) // dp * dp)
    val = SegmentBatches(val_stream, val_batch, model_config.seq_len, layout.dp_rank, dp)
    optimizer = adamw(engine.core, s.lr, s.weight_decay, s.betas, foreach=not layout.distributed)
    return _Run(cfg, model_config, engine, optimizer, objective, train, val,
                cfg.out / "checkpoints" / cfg.name)


def _restore(run: _Run, resume: str | None) -> tuple[TrainerState, Mems | None]:
    """Start fresh, or continue from `resume` ("auto" = newest valid checkpoint, or a path)."""
    fresh = TrainerState(step=0, plateau=Plateau(run.settings.plateau_patience,
                                                run.settings.plateau_factor).state_dict(),
                         model_config=to_dict(run.model_config))
    if resume is None:
        return fresh, None
    path = latest_checkpoint(run.ckpt_root) if resume == "auto" else Path(resume)
    if path is None:
        return fresh, None
    if not (path / "state.json").is_file():
        raise CheckpointError(f"{path}: not a checkpoint folder (expected step_NNNNNN/ with state.json)")
    state, mems = load_checkpoint(path, run.engine, run.optimizer, to_dict(run.model_config))
    if run.layout.rank == 0:
        tqdm.write(f"resumed from {path} (step {state.step})")
    return state, mems or None


def pretrain(cfg: PretrainConfig, resume: str | None = "auto",
             layout: Layout | None = None) -> PretrainResult:
    """Train `cfg.model` on packed tokens; write checkpoints and the final model folder.

    `layout` is this rank's place in a parallel run (see `lmforge.parallel`); None = one process.
    Every rank calls this; rank 0 writes the logs and the model folder.
    """
    layout = layout or Layout.single()
    run = _build(cfg, layout)
    state, mems = _restore(run, resume)
    plateau = Plateau.from_state(state.plateau)
    log = MetricsLog(run.ckpt_root, resume_step=state.step) if layout.rank == 0 else None
    before = None
    if state.step == 0:
        before = _validate(run)["loss"]
        if log:
            log.write(0, val_loss=before, val_ppl=math.exp(before))
    try:
        state, mems = _loop(run, state, plateau, mems, log)
    finally:
        if log:
            log.close()
    after = _validate(run)["loss"]
    model_dir = cfg.out / "models" / cfg.name
    if layout.rank == 0:
        model = Transformer(run.model_config)
        model.load_state_dict(read_weights(latest_checkpoint(run.ckpt_root)))
        save_model_folder(
            model_dir, model, run.model_config, cfg.data.tokenizer,
            heads={"lm": {"task": "causal_lm" if run.objective.causal else "masked_lm"}},
            config_used=to_dict(cfg), parents=[cfg.data.tokens, cfg.data.tokenizer],
            extra={"val_loss": after, "val_ppl": math.exp(after), "steps": state.step},
        )
    return PretrainResult(model_dir, run.ckpt_root, before, after, state.step)


def _validate(run: _Run) -> dict[str, float]:
    return run.engine.evaluate(run.val, run.objective, run.settings.eval_segments, run.rows(run.val))


def _loop(run: _Run, state: TrainerState, plateau: Plateau, mems: Mems | None,
          log: MetricsLog | None) -> tuple[TrainerState, Mems | None]:
    s, engine = run.settings, run.engine
    tokens_per_step = s.batch_size * run.model_config.seq_len
    peak = (s.peak_gflops or measure_peak_gflops()) * 1e9 * run.layout.world
    flops = flops_per_token(run.model_config)
    engine.module.train()
    bar = tqdm(total=s.steps, initial=state.step, desc=run.cfg.name, unit="step", dynamic_ncols=True,
               disable=run.layout.rank != 0)
    while state.step < s.steps:
        step, started = state.step, time.perf_counter()
        lr = warmup_cosine(step, s.steps, s.lr, s.warmup_fraction, s.min_lr_ratio) * plateau.scale
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        x, y = run.train.batch(step)
        inputs, labels = run.objective.prepare(x, y, step, run.rows(run.train))
        loss, mems = engine.forward_backward(inputs, labels, mems, run.objective.causal)
        if not math.isfinite(loss):
            bar.close()
            raise TrainingDiverged(_diverged_message(run, step, loss))
        grad_norm = engine.clip_gradients(s.grad_clip)
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
        state.step += 1
        tok_s = tokens_per_step / (time.perf_counter() - started)
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", tok_s=f"{tok_s:,.0f}",
                        mfu=f"{tok_s * flops / peak:.0%}")
        if log and (state.step % s.log_every == 0 or state.step == s.steps):
            log.write(state.step, loss=loss, lr=lr, grad_norm=grad_norm, tokens_per_s=tok_s,
                      mfu=tok_s * flops / peak)
        if state.step % s.eval_every == 0 or state.step == s.steps:
            _evaluate_and_adapt(run, state, plateau, log, bar)
        if state.step % s.checkpoint_every == 0 or state.step == s.steps:
            state.plateau = plateau.state_dict()
            save_checkpoint(run.ckpt_root, state, engine, run.optimizer, mems, s.keep_checkpoints)
    bar.close()
    return state, mems


def clip_gradients(model: torch.nn.Module, max_norm: float) -> float:
    """Clip to `max_norm` (0 = off) and return the pre-clip global norm for the log."""
    limit = max_norm if max_norm > 0 else math.inf
    return float(torch.nn.utils.clip_grad_norm_(model.parameters(), limit))


def _evaluate_and_adapt(run: _Run, state: TrainerState, plateau: Plateau, log: MetricsLog | None,
                        bar: tqdm) -> None:
    val = _validate(run)  # the same global figure on every rank, so every rank cuts the rate alike
    cut = plateau.update(val["loss"])
    state.best_val_loss = plateau.best
    if log:
        log.write(state.step, val_loss=val["loss"], val_ppl=val["ppl"], lr_scale=plateau.scale)
    if cut:
        bar.write(f"step {state.step}: validation loss plateaued; learning rate x{plateau.factor}")


def _diverged_message(run: _Run, step: int, loss: float) -> str:
    last = latest_checkpoint(run.ckpt_root)
    kept = f"last good checkpoint kept at {last}" if last else "no checkpoint had been written yet"
    return (f"step {step}: loss is {loss} (not finite); training stopped, {kept}. "
            f"Try a lower train.lr (now {run.settings.lr}) or train.grad_clip.")
