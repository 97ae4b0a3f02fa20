"""Single-device model: config and presets, the XL backbone, task heads, GradNorm, masking, generation.

Knows nothing of parallelism, data loading or serving; those wrap or feed it from outside.
"""

from lmforge.model.config import PRESETS, ModelConfig
from lmforge.model.generate import generate
from lmforge.model.gradnorm import FixedWeights, GradNorm
from lmforge.model.heads import (
    ContrastiveEmbeddingHead,
    MultiTaskModel,
    SequenceClassificationHead,
    TokenClassificationHead,
    build_heads,
    heads_spec,
    shared_layer,
)
from lmforge.model.info import describe, flops_per_token
from lmforge.model.masking import mask_tokens
from lmforge.model.xl import ModelOutput, Transformer

__all__ = [
    "PRESETS",
    "ContrastiveEmbeddingHead",
    "FixedWeights",
    "GradNorm",
    "ModelConfig",
    "ModelOutput",
    "MultiTaskModel",
    "SequenceClassificationHead",
    "TokenClassificationHead",
    "Transformer",
    "build_heads",
    "describe",
    "flops_per_token",
    "generate",
    "heads_spec",
    "mask_tokens",
    "shared_layer",
]
