"""The model folder: the contract between training, compression, export and serving.

`models/<m>/` holds config.json (architecture), model.safetensors (weights), tokenizer.json,
heads.json (which heads, their label names), heads.safetensors (the task heads' weights, only
when a head has a module) and manifest.json. Everything that loads a model
goes through `load_model`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from safetensors.torch import load_model as load_safetensors
from safetensors.torch import save_model as save_safetensors
from torch import nn

from lmforge.artifacts import (
    ArtifactError,
    atomic_dir,
    atomic_write_json,
    atomic_write_text,
    tokenizer_file,
    write_manifest,
)
from lmforge.model.config import ModelConfig
from lmforge.model.heads import build_heads
from lmforge.model.quantized import load_quantized, quantize_backbone, save_quantized
from lmforge.model.xl import Transformer

FILES = ("config.json", "model.safetensors", "tokenizer.json", "heads.json")
HEAD_WEIGHTS = "heads.safetensors"


def save_model_folder(path: str | Path, model: Transformer, config: ModelConfig, tokenizer: str | Path,
                      heads: dict[str, Any], config_used: dict[str, Any] | None = None,
                      parents: list[str | Path] | None = None, extra: dict[str, Any] | None = None,
                      stage: str = "pretrain", head_modules: nn.ModuleDict | None = None,
                      files: dict[str, Any] | None = None) -> Path:
    """Write a complete model folder atomically (replacing an older one of the same name).

    `head_modules` are the task heads `heads` describes; `files` are extra files written before
    the manifest, so it records their hashes too: strings verbatim (e.g. a metrics.jsonl log),
    anything else as JSON (e.g. metrics.json).
    """
    path = Path(path)
    with atomic_dir(path, overwrite=True) as tmp:
        atomic_write_json(tmp / "config.json", config.model_dump(mode="json", exclude={"preset"}))
        if config.quantization is None:
            save_safetensors(model, str(tmp / "model.safetensors"))
        else:
            save_quantized(model, tmp / "model.safetensors")
        if head_modules is not None and len(head_modules):
            save_safetensors(head_modules, str(tmp / HEAD_WEIGHTS))
        for name, content in (files or {}).items():
            if isinstance(content, str):
                atomic_write_text(tmp / name, content)
            else:
                atomic_write_json(tmp / name, content)
        shutil.copyfile(tokenizer_file(tokenizer), tmp / "tokenizer.json")
        atomic_write_json(tmp / "heads.json", {"heads": heads})
        write_manifest(tmp, stage, config_used, parents, extra)
    return path


def read_model_config(path: str | Path) -> ModelConfig:
    path = Path(path)
    for name in FILES:
        if not (path / name).is_file():
            raise ArtifactError(f"{path}: not a model folder ({name} is missing)")
    try:
        return ModelConfig.model_validate(json.loads((path / "config.json").read_text()))
    except (json.JSONDecodeError, ValidationError) as err:
        raise ArtifactError(f"{path / 'config.json'}: invalid model config ({err})") from None


def load_model(path: str | Path, device: str | torch.device = "cpu") -> Transformer:
    """Build the architecture from config.json (quantised modules too) and load the weights, strictly."""
    path = Path(path)
    config = read_model_config(path)
    model = Transformer(config)
    try:
        if config.quantization is None:
            load_safetensors(model, str(path / "model.safetensors"), strict=True, device=str(device))
        else:
            load_quantized(quantize_backbone(model, config.quantization), path / "model.safetensors", device)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise ArtifactError(f"{path / 'model.safetensors'}: weights do not fit config.json "
                            f"({first})") from None
    return model.to(device).eval()


def read_heads(path: str | Path) -> dict[str, Any]:
    """heads.json's entries by head name: task, settings, label names, how the head was trained."""
    file = Path(path) / "heads.json"
    try:
        heads = json.loads(file.read_text())["heads"]
    except FileNotFoundError:
        raise ArtifactError(f"{path}: not a model folder (heads.json is missing)") from None
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise ArtifactError(f"{file}: expected {{\"heads\": {{name: {{\"task\": ...}}}}}} ({err})") from None
    if not isinstance(heads, dict) or not all(isinstance(e, dict) and "task" in e for e in heads.values()):
        raise ArtifactError(f"{file}: every head needs a \"task\" entry")
    return heads


def load_heads(path: str | Path, device: str | torch.device = "cpu") -> nn.ModuleDict:
    """Rebuild the task heads heads.json describes and load their weights (empty for an LM-only model)."""
    path = Path(path)
    heads = build_heads(read_heads(path), read_model_config(path).d_model)
    if not len(heads):
        return heads
    if not (path / HEAD_WEIGHTS).is_file():
        raise ArtifactError(f"{path}: heads.json lists task heads but {HEAD_WEIGHTS} is missing")
    try:
        load_safetensors(heads, str(path / HEAD_WEIGHTS), strict=True, device=str(device))
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise ArtifactError(f"{path / HEAD_WEIGHTS}: weights do not fit heads.json ({first})") from None
    return heads.to(device).eval()
