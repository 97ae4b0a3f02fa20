"""The pretraining loop: AdamW, clipping, token-normalised accumulation, S4 schedule, resume.

One optimizer step reads batch `step` of the segment stream (a pure function of the step), runs
it as micro-batches that each carry their own recurrence memory, divides every micro-batch's
summed loss by the target count of the *whole* batch, clips, and steps. Everything a step
depends on (weights, moments, memory, RNG, plateau) is in the checkpoint, so a resumed run
continues the same trajectory.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tokenizers import Tokenizer
from tqdm import tqdm

from lmforge.config import to_dict
from lmforge.model import ModelConfig, Transformer, flops_per_token
from lmforge.model.folder import save_model_folder, tokenizer_file
from lmforge.tokenizer import SPECIAL_TOKENS, SegmentBatches, TokenStream
from lmforge.train.checkpoint import (
    CheckpointError,
    TrainerState,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from lmforge.train.config import PretrainConfig, TrainSettings
from lmforge.train.evaluate import evaluate
from lmforge.train.metrics import MetricsLog, measure_peak_gflops
from lmforge.train.objectives import Objective, count_targets, summed_loss
from lmforge.train.schedule import Plateau, warmup_cosine

Mems = list[list[torch.Tensor]]  # per micro-batch, per layer


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
          betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.AdamW:
    """AdamW with decay on matrices only: decaying gains, biases and u/v offsets only hurts."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, foreach=True)


def build_optimizer(model: torch.nn.Module, settings: TrainSettings) -> torch.optim.AdamW:
    return adamw(model, settings.lr, settings.weight_decay, settings.betas)


def accumulate_gradients(model: Transformer, objective: Objective, x: torch.Tensor, y: torch.Tensor,
                         micro_batch_size: int, mems: Mems | None, draw: int,
                         bf16: bool = False) -> tuple[float, int, Mems]:
    """Backward over the micro-batches of one batch; returns mean loss, target count, new mems.

    Targets are made for the whole batch first: their total is the normaliser, and the masks
    must not depend on how the batch is split.
    """
    inputs, labels = objective.prepare(x, y, draw)
    total_targets = max(count_targets(labels), 1)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()
    loss_sum, new_mems = 0.0, []
    for k, start in enumerate(range(0, x.shape[0], micro_batch_size)):
        rows = slice(start, start + micro_batch_size)
        with autocast:
            out = model(inputs[rows], mems[k] if mems else None, causal=objective.causal)
            loss = summed_loss(out.logits, labels[rows])
        (loss / total_targets).backward()
        loss_sum += float(loss.detach())
        new_mems.append(out.mems)
    return loss_sum / total_targets, total_targets, new_mems


@dataclass
class _Run:
    """Everything the loop touches, built once from the config."""

    cfg: PretrainConfig
    model_config: ModelConfig
    model: Transformer
    optimizer: torch.optim.AdamW
    objective: Objective
    train: SegmentBatches
    val: SegmentBatches
    ckpt_root: Path

    @property
    def settings(self) -> TrainSettings:
        return self.cfg.train


def _build(cfg: PretrainConfig) -> _Run:
    tokenizer = Tokenizer.from_file(str(tokenizer_file(cfg.data.tokenizer)))
    vocab = tokenizer.get_vocab_size()
    model_config = cfg.model.model_copy(update={"vocab_size": vocab})
    s = cfg.train
    torch.manual_seed(s.seed)
    model = Transformer(model_config)
    special = tuple(tokenizer.token_to_id(t) for t in SPECIAL_TOKENS)
    objective = Objective(kind=s.objective, mask_id=tokenizer.token_to_id("<mask>"), vocab_size=vocab,
                          special_ids=special, mask_prob=s.mask_prob, seed=s.seed)
    train = SegmentBatches(TokenStream(cfg.data.tokens, "train"), s.batch_size, model_config.seq_len)
    val_stream = TokenStream(cfg.data.tokens, "val")
    val_batch = max(1, min(s.batch_size, len(val_stream) // (model_config.seq_len + 1)))
    val = SegmentBatches(val_stream, val_batch, model_config.seq_len)
    return _Run(cfg, model_config, model, build_optimizer(model, s), objective, train, val,
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
    state, mems = load_checkpoint(path, run.model, run.optimizer, to_dict(run.model_config))
    tqdm.write(f"resumed from {path} (step {state.step})")
    return state, mems or None


def pretrain(cfg: PretrainConfig, resume: str | None = "auto") -> PretrainResult:
    """Train `cfg.model` on packed tokens; write checkpoints and the final model folder."""
    run = _build(cfg)
    state, mems = _restore(run, resume)
    plateau = Plateau.from_state(state.plateau)
    s = run.settings
    log = MetricsLog(run.ckpt_root, resume_step=state.step)
    before = None
    if state.step == 0:
        before = evaluate(run.model, run.val, run.objective, s.eval_segments, s.precision == "bf16")["loss"]
        log.write(0, val_loss=before, val_ppl=math.exp(before))
    try:
        state, mems = _loop(run, state, plateau, mems, log)
    finally:
        log.close()
    after = evaluate(run.model, run.val, run.objective, s.eval_segments, s.precision == "bf16")["loss"]
    model_dir = save_model_folder(
        cfg.out / "models" / cfg.name, run.model, run.model_config, cfg.data.tokenizer,
        heads={"lm": {"task": "causal_lm" if run.objective.causal else "masked_lm"}},
        config_used=to_dict(cfg), parents=[cfg.data.tokens, cfg.data.tokenizer],
        extra={"val_loss": after, "val_ppl": math.exp(after), "steps": state.step},
    )
    return PretrainResult(model_dir, run.ckpt_root, before, after, state.step)


def _loop(run: _Run, state: TrainerState, plateau: Plateau, mems: Mems | None,
          log: MetricsLog) -> tuple[TrainerState, Mems | None]:
    s, model = run.settings, run.model
    micro = s.micro_batch_size or s.batch_size
    tokens_per_step = s.batch_size * run.model_config.seq_len
    peak = (s.peak_gflops or measure_peak_gflops()) * 1e9
    flops = flops_per_token(run.model_config)
    model.train()
    bar = tqdm(total=s.steps, initial=state.step, desc=run.cfg.name, unit="step", dynamic_ncols=True)
    while state.step < s.steps:
        step, started = state.step, time.perf_counter()
        lr = warmup_cosine(step, s.steps, s.lr, s.warmup_fraction, s.min_lr_ratio) * plateau.scale
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        x, y = run.train.batch(step)
        loss, _, mems = accumulate_gradients(model, run.objective, x, y, micro, mems, step,
                                             s.precision == "bf16")
        if not math.isfinite(loss):
            bar.close()
            raise TrainingDiverged(_diverged_message(run, step, loss))
        grad_norm = clip_gradients(model, s.grad_clip)
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
        state.step += 1
        tok_s = tokens_per_step / (time.perf_counter() - started)
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", tok_s=f"{tok_s:,.0f}",
                        mfu=f"{tok_s * flops / peak:.0%}")
        if state.step % s.log_every == 0 or state.step == s.steps:
            log.write(state.step, loss=loss, lr=lr, grad_norm=grad_norm, tokens_per_s=tok_s,
                      mfu=tok_s * flops / peak)
        if state.step % s.eval_every == 0 or state.step == s.steps:
            _evaluate_and_adapt(run, state, plateau, log, bar)
        if state.step % s.checkpoint_every == 0 or state.step == s.steps:
            state.plateau = plateau.state_dict()
            save_checkpoint(run.ckpt_root, state, model, run.optimizer, mems or [], s.keep_checkpoints)
    bar.close()
    return state, mems


def clip_gradients(model: torch.nn.Module, max_norm: float) -> float:
    """Clip to `max_norm` (0 = off) and return the pre-clip global norm for the log."""
    limit = max_norm if max_norm > 0 else math.inf
    return float(torch.nn.utils.clip_grad_norm_(model.parameters(), limit))


def _evaluate_and_adapt(run: _Run, state: TrainerState, plateau: Plateau, log: MetricsLog,
                        bar: tqdm) -> None:
    s = run.settings
    val = evaluate(run.model, run.val, run.objective, s.eval_segments, s.precision == "bf16")
    cut = plateau.update(val["loss"])
    state.best_val_loss = plateau.best
    log.write(state.step, val_loss=val["loss"], val_ppl=val["ppl"], lr_scale=plateau.scale)
    if cut:
        bar.write(f"step {state.step}: validation loss plateaued; learning rate x{plateau.factor}")


def _diverged_message(run: _Run, step: int, loss: float) -> str:
    last = latest_checkpoint(run.ckpt_root)
    kept = f"last good checkpoint kept at {last}" if last else "no checkpoint had been written yet"
    return (f"step {step}: loss is {loss} (not finite); training stopped, {kept}. "
            f"Try a lower train.lr (now {run.settings.lr}) or train.grad_clip.")
