"""A factory of very small float64 models, so exact-equality checks are not blurred by rounding."""

from __future__ import annotations

import pytest
import torch

from lmforge.model import ModelConfig, Transformer


def build(position: str = "xl", **overrides) -> Transformer:
    settings = {"vocab_size": 50, "d_model": 32, "n_layers": 2, "n_heads": 4, "d_ff": 64,
                "seq_len": 8, "mem_len": 8, "dropout": 0.1, "position": position, **overrides}
    torch.manual_seed(0)
    return Transformer(ModelConfig(**settings)).double().eval()


@pytest.fixture
def make_model():
    """`make_model(position, **config_overrides)` -> an eval-mode float64 Transformer."""
    return build
