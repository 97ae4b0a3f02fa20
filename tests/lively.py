"""Random models whose tokens depend on their context, for generation tests (importable from any
test: `pythonpath = ["tests"]`)."""

from __future__ import annotations

import torch


def lively(model: torch.nn.Module) -> torch.nn.Module:
    """Unit-scale random weights with residual branches larger than the tied embedding: the model's
    tokens then depend on the context rather than repeating the input token."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.startswith("blocks") and param.dim() == 2:
                gain = 4 if name.endswith(("wo.weight", "w_out.weight")) else 1
                param.normal_(std=gain / param.size(1) ** 0.5)
            elif name.endswith((".u", ".v")):
                param.normal_(std=0.5)
        model.tok_emb.weight.normal_(std=0.4)
        if model.pos_emb is not None:
            model.pos_emb.weight.normal_(std=0.4)
    return model
