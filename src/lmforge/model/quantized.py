"""Quantised backbones: built from a `Quantization` record, saved and loaded as safetensors.

The quantised modules are torchao's (`quantize_` swaps each `nn.Linear` weight for an INT8 or
INT4 tensor subclass); this module only decides which layers get which torchao config, so a
model folder's config.json says everything a loader needs to rebuild the same modules before it
loads their weights. It lives in `model/` so the bundle loader reaches it without `compress/`.

What gets quantised: every linear of the blocks (attention q/k/v/o, the MLP, the XL position
projection). Task heads stay float (a few thousand weights). The token embedding and the LM head
only when `embeddings` is set; the LM head is then untied (two INT8 copies, still 2x smaller).
`static` gives the six block linears that read [B, T, D] activations a calibrated input scale;
the position projection reads a constant sinusoid table and stays dynamic.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from lmforge.model.config import Quantization

STATIC_LINEARS = ("attn.wq", "attn.wk", "attn.wv", "attn.wo", "mlp.w_in", "mlp.w_out")
"""Block linears whose input is a [B, T, D] activation, so a calibrated scale applies."""


def torchao():
    """torchao's quantisation API, imported on first use: the import takes seconds and logs
    warnings about CUDA kernels and torch.compile that mean nothing to a CPU user."""
    noisy = [logging.getLogger(name) for name in ("torchao", "torch.utils._pytree")]
    levels = [logger.level for logger in noisy]
    for logger in noisy:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import torchao.quantization as quantization
    finally:
        for logger, level in zip(noisy, levels, strict=True):
            logger.setLevel(level)
    return quantization


def quantize_backbone(model: nn.Module, recipe: Quantization) -> nn.Module:
    """Swap `model`'s weights for quantised ones as `recipe` says, in place; returns the model."""
    ao = torchao()
    if recipe.embeddings:
        model.lm_head.weight = nn.Parameter(model.tok_emb.weight.detach().clone())
        ao.quantize_(model, ao.IntxWeightOnlyConfig(weight_dtype=torch.int8, granularity=ao.PerAxis(0)),
                     filter_fn=lambda module, name: name == "tok_emb")
    static = recipe.act_scales if recipe.method == "static" else {}
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or not _quantised(name, recipe):
            continue
        config = _static_config(ao, static[name]) if name in static else _linear_config(ao, recipe)
        ao.quantize_(module, config, filter_fn=lambda m, fqn: isinstance(m, nn.Linear))
    return model


def _quantised(name: str, recipe: Quantization) -> bool:
    return name.startswith("blocks.") or (name == "lm_head" and recipe.embeddings)


def _linear_config(ao, recipe: Quantization):
    if recipe.method == "weight-only":
        if recipe.bits == 4:
            groups = ao.PerGroup(recipe.group_size)
            return ao.IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=groups)
        return ao.Int8WeightOnlyConfig()
    return ao.Int8DynamicActivationInt8WeightConfig()


def _static_config(ao, scale: float):
    # Activation scale per tensor ([1, 1, 1]: torchao wants the input's rank), weights per channel.
    return ao.Int8StaticActivationInt8WeightConfig(act_quant_scale=torch.full((1, 1, 1), scale),
                                                  granularity=[ao.PerTensor(), ao.PerRow()])


def save_quantized(model: nn.Module, file: Path) -> None:
    """Write a quantised model's weights (torchao subclasses flattened to plain tensors + metadata)."""
    from torchao.prototype.safetensors.safetensors_support import flatten_tensor_state_dict

    state = _untied(model, model.state_dict())
    tensors, metadata = flatten_tensor_state_dict(state)
    save_file(tensors, str(file), metadata=metadata)


def load_quantized(model: nn.Module, file: Path, device: str | torch.device) -> None:
    """Fill `model` (already `quantize_backbone`d with the same recipe) from `save_quantized`'s file.

    Raises RuntimeError (as `load_state_dict` does) when the file does not fit the model.
    """
    from torchao.prototype.safetensors.safetensors_support import unflatten_tensor_state_dict

    with safe_open(str(file), "pt") as f:
        metadata = f.metadata()
    state, leftover = unflatten_tensor_state_dict(load_file(str(file), device=str(device)), metadata)
    if leftover:
        raise RuntimeError(f"unexpected tensors {sorted(leftover)[:3]}")
    tied = _tied_keys(model)
    result = model.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in result.missing_keys if k not in tied]
    if missing or result.unexpected_keys:
        raise RuntimeError(f"missing {missing[:3]}, unexpected {result.unexpected_keys[:3]}")
    if tied:  # assign=True replaced the embedding's parameter: tie the LM head to it again
        model.lm_head.weight = model.tok_emb.weight


def _tied_keys(model: nn.Module) -> set[str]:
    return {"lm_head.weight"} if model.lm_head.weight is model.tok_emb.weight else set()


def _untied(model: nn.Module, state: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in state.items() if k not in _tied_keys(model)}

