"""Architecture config of the backbone, with the guide's named sizes as presets.

`preset` fills every field that is not given explicitly, so `{preset: base-768, dropout: 0.0}`
is the guide's 768-wide model with dropout off. The resolved values are what gets saved in a
model folder; a saved config reloads to the same model because explicit keys always win.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from lmforge.config import Config

Position = Literal["xl", "absolute", "rotary"]

_SEGMENT_512 = {"vocab_size": 32000, "seq_len": 512, "mem_len": 512}

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"d_model": 128, "n_layers": 2, "n_heads": 4, "d_ff": 512, "seq_len": 64, "mem_len": 64},
    "small": {"d_model": 256, "n_layers": 4, "n_heads": 4, "d_ff": 1024, "seq_len": 128, "mem_len": 128},
    "base-768": {"d_model": 768, "n_layers": 12, "n_heads": 12, "d_ff": 3072, **_SEGMENT_512},
    "large-1024": {"d_model": 1024, "n_layers": 24, "n_heads": 16, "d_ff": 4096, **_SEGMENT_512},
    "xl-1536": {"d_model": 1536, "n_layers": 36, "n_heads": 24, "d_ff": 6144, **_SEGMENT_512},
}
"""The guide's size table (hidden 768/1024/1536) plus two sizes that train in minutes on a CPU."""


QuantMethod = Literal["dynamic", "weight-only", "static", "qat"]


class Quantization(Config):
    """How a model folder's weights were quantised; `model/quantized.py` rebuilds the modules from it."""

    method: QuantMethod
    """dynamic: INT8 weights, activations quantised per token at run time; weight-only: INT8/INT4
    weights, float activations; static: INT8 weights and activations with calibrated scales; qat:
    fine-tuned with fake quantisation, then stored as dynamic."""
    bits: Literal[8, 4] = 8
    """Weight bits; 4 only for weight-only (grouped scales)."""
    group_size: int = Field(32, gt=0)
    """Weights per scale for 4-bit weights."""
    embeddings: bool = False
    """Also quantise the token embedding and the LM head (then untied): the largest matrices of a
    small model, so the size changes most, and generation quality the most too."""
    act_scales: dict[str, float] = {}
    """static: each block linear's calibrated input scale (absmax / 127), by module name."""

    @model_validator(mode="after")
    def _check_bits(self) -> Quantization:
        if self.bits == 4 and self.method != "weight-only":
            raise ValueError(f"4-bit weights are weight-only; {self.method} quantisation is 8-bit")
        return self


class ModelConfig(Config):
    """Transformer-XL-style backbone: sizes, segment/memory lengths and position encoding."""

    preset: str | None = None
    """Named preset whose values fill every field not given explicitly."""
    vocab_size: int = Field(8192, gt=0)
    """Token vocabulary; training replaces it with the tokenizer's size."""
    d_model: int = Field(128, gt=0)
    """Width of the residual stream (the guide's 'hidden size')."""
    n_layers: int = Field(2, gt=0)
    """Number of transformer blocks."""
    n_heads: int = Field(4, gt=0)
    """Attention heads per block; must divide d_model."""
    d_ff: int = Field(512, gt=0)
    """Hidden width of the GeLU MLP in each block."""
    seq_len: int = Field(64, gt=0)
    """Segment length: tokens per training segment."""
    mem_len: int = Field(64, ge=0)
    """Recurrence memory per layer in tokens (cached layer inputs of earlier segments); 0 turns it off."""
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    """Dropout on the embeddings and on both residual branches of every block."""
    attn_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    """Dropout on attention weights. Off by default, as in Transformer-XL's WikiText-103 runs: on a
    CPU it costs 20-40% of a training step and keeps absolute/rotary off the fused kernel."""
    position: Position = "xl"
    """Position encoding: 'xl' (relative, Dai et al. 2019), 'absolute' (learned) or 'rotary'."""
    layer_norm_eps: float = Field(1e-5, gt=0.0)
    """Epsilon of every LayerNorm."""
    layer_heads: list[int] | None = None
    """Attention heads kept in each block after structured pruning; None = n_heads everywhere.
    The head width stays d_model/n_heads, so a pruned head's slices simply disappear."""
    layer_d_ff: list[int] | None = None
    """MLP hidden width of each block after structured pruning; None = d_ff everywhere."""
    quantization: Quantization | None = None
    """Set on a quantised model folder (`lmforge quantize`); None: float weights."""

    @model_validator(mode="before")
    @classmethod
    def _expand_preset(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("preset") is None:
            return data
        name = data["preset"]
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}")
        return {**PRESETS[name], **data}

    @model_validator(mode="after")
    def _check_heads(self) -> ModelConfig:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if self.position == "rotary" and self.head_dim % 2:
            raise ValueError(f"rotary positions need an even head dim; d_model/n_heads = {self.head_dim}")
        for name in ("layer_heads", "layer_d_ff"):
            values = getattr(self, name)
            if values is not None and (len(values) != self.n_layers or min(values) < 1):
                raise ValueError(f"{name} needs one value >= 1 per layer ({self.n_layers}); got {values}")
        return self

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def heads_at(self, layer: int) -> int:
        """Attention heads of block `layer`."""
        return self.n_heads if self.layer_heads is None else self.layer_heads[layer]

    def d_ff_at(self, layer: int) -> int:
        """MLP hidden width of block `layer`."""
        return self.d_ff if self.layer_d_ff is None else self.layer_d_ff[layer]

    @property
    def context_len(self) -> int:
        """Tokens one query can see: its segment plus the memory (also the generation window)."""
        return self.seq_len + self.mem_len
