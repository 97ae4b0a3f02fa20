"""The parallel layout of a run: how many ways each kind of parallelism splits the work.

The four degrees multiply to the world size, and every one is checked against the model and
the batch before a single worker starts, with a message that names the two numbers that clash.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lmforge.config import Config, ConfigError
from lmforge.model import ModelConfig


class ParallelSettings(Config):
    dp_replicate: int = Field(1, ge=1)
    """Data-parallel replicas (DDP when it is the only parallelism; HSDP replicas beside dp_shard)."""
    dp_shard: int = Field(-1, ge=-1)
    """Fully-sharded data parallel degree (FSDP2 `fully_shard`); -1 = whatever the world size leaves."""
    tp: int = Field(1, ge=1)
    """Tensor parallel degree: attention heads, MLP columns and the vocabulary split across ranks."""
    pp: int = Field(1, ge=1)
    """Pipeline stages: the layer stack cut into `pp` consecutive groups of blocks."""
    pp_schedule: Literal["gpipe", "1f1b"] = "1f1b"
    """GPipe (all forwards, then all backwards) or 1F1B (same bubble, activations of ~pp micro-batches)."""
    microbatches: int | None = Field(None, ge=1)
    """Pipeline micro-batches per step (default: pp); each rank's batch must split evenly into them."""

    def resolved(self, world: int) -> ParallelSettings:
        """A copy with dp_shard = -1 filled in from the world size."""
        if self.dp_shard != -1:
            return self
        rest = self.dp_replicate * self.tp * self.pp
        if world % rest:
            raise ConfigError(f"parallel: world size {world} is not a multiple of "
                              f"dp_replicate x tp x pp = {rest}, so dp_shard=-1 cannot be filled in")
        return self.model_copy(update={"dp_shard": world // rest})

    @property
    def dp(self) -> int:
        """Ranks that see different data: replicas times shards."""
        return self.dp_replicate * self.dp_shard

    @property
    def n_microbatches(self) -> int:
        return self.microbatches or self.pp

    def describe(self) -> str:
        return (f"dp_replicate={self.dp_replicate} dp_shard={self.dp_shard} tp={self.tp} pp={self.pp}"
                + (f" ({self.pp_schedule}, {self.n_microbatches} micro-batches)" if self.pp > 1 else ""))


def check_layout(settings: ParallelSettings, world: int, model: ModelConfig,
                 batch_size: int) -> ParallelSettings:
    """Resolve and validate `settings` for `world` ranks; raise ConfigError naming the clash."""
    s = settings.resolved(world)
    product = s.dp_replicate * s.dp_shard * s.tp * s.pp
    if product != world:
        raise ConfigError(f"parallel: dp_replicate x dp_shard x tp x pp = {s.dp_replicate} x {s.dp_shard} "
                          f"x {s.tp} x {s.pp} = {product}, but the world size is {world}")
    # Per layer too: a pruned model's layers have widths of their own.
    widths = [("n_heads", model.n_heads), ("d_ff", model.d_ff), ("vocab_size", model.vocab_size)]
    widths += [(f"n_heads of layer {i}", model.heads_at(i)) for i in range(model.n_layers)]
    widths += [(f"d_ff of layer {i}", model.d_ff_at(i)) for i in range(model.n_layers)]
    for name, value in widths:
        if value % s.tp:
            raise ConfigError(f"parallel: tp={s.tp} does not divide {name}={value}")
    if s.pp > model.n_layers:
        raise ConfigError(f"parallel: pp={s.pp} stages need at least {s.pp} layers, the model has "
                          f"n_layers={model.n_layers}")
    if batch_size % s.dp:
        raise ConfigError(f"parallel: train.batch_size={batch_size} does not split over "
                          f"dp_replicate x dp_shard = {s.dp} data-parallel ranks")
    local = batch_size // s.dp
    if s.pp > 1 and local % s.n_microbatches:
        raise ConfigError(f"parallel: each data-parallel rank gets {local} sequences, which do not split "
                          f"into microbatches={s.n_microbatches}")
    return s


def stage_layers(n_layers: int, pp: int) -> list[range]:
    """Consecutive layer ranges per stage, as even as possible (earlier stages take the remainder)."""
    base, extra = divmod(n_layers, pp)
    bounds, start = [], 0
    for stage in range(pp):
        stop = start + base + (1 if stage < extra else 0)
        bounds.append(range(start, stop))
        start = stop
    return bounds
