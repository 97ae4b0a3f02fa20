"""Single-device model: config and presets, the Transformer-XL backbone, masking, generation.

Knows nothing of parallelism, data loading or serving; those wrap or feed it from outside.
"""

from lmforge.model.config import PRESETS, ModelConfig
from lmforge.model.generate import generate
from lmforge.model.info import describe, flops_per_token
from lmforge.model.masking import mask_tokens
from lmforge.model.xl import ModelOutput, Transformer

__all__ = [
    "PRESETS",
    "ModelConfig",
    "ModelOutput",
    "Transformer",
    "describe",
    "flops_per_token",
    "generate",
    "mask_tokens",
]
