"""The one model loader: a model folder as everything that uses a model needs it.

`load_bundle` returns the backbone, the tokenizer, the task heads and, per head, the settings it
was trained with (attention direction, truncation, columns, k): `evaluate`, `generate`, the
pipeline's sample, the masked-LM augmenter, fine-tuning, and the coming export and serving
stages all load a model through it, so a head is always run the way it was trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer
from torch import nn

from lmforge.artifacts import ArtifactError, load_tokenizer
from lmforge.model.config import ModelConfig
from lmforge.model.folder import load_heads, load_model, read_heads, read_model_config
from lmforge.model.heads import LM_TASKS, MultiTaskModel
from lmforge.model.xl import Transformer


@dataclass
class ModelBundle:
    folder: Path
    config: ModelConfig
    model: Transformer
    tokenizer: Tokenizer
    heads: nn.ModuleDict
    """Task heads with a module (classify, ner, embed), by name."""
    spec: dict[str, dict[str, Any]]
    """heads.json: every head (LM heads too) with its task, settings, label names and usage."""

    def head(self, name: str, task: str | None = None) -> dict[str, Any]:
        """The heads.json entry of head `name`, checked to be a `task` head when `task` is given."""
        entry = self.spec.get(name)
        if entry is None or (task is not None and entry["task"] != task):
            wanted = f"{task!r} head" if task else "head"
            known = ", ".join(f"{n} ({e['task']})" for n, e in self.spec.items())
            raise ArtifactError(f"{self.folder}: no {wanted} named {name!r} (heads: {known})")
        return entry

    def usage(self, name: str) -> dict[str, Any]:
        """How head `name` was trained: causal, max_len, text_column, label_column, k (empty if unknown)."""
        return self.head(name).get("usage", {})

    def task_model(self, head: str) -> MultiTaskModel:
        """Backbone + heads, attending the way head `head` was trained."""
        return MultiTaskModel(self.model, self.heads, causal=self.usage(head).get("causal", False))

    def task_head(self) -> str | None:
        """The first head with a module of its own (classify, ner, embed), or None for an LM-only folder."""
        return next((name for name, e in self.spec.items() if e["task"] not in LM_TASKS), None)

    def lm_task(self) -> str | None:
        """"causal_lm" or "masked_lm" when the folder has an LM head, else None."""
        return next((e["task"] for e in self.spec.values() if e["task"] in LM_TASKS), None)


def load_bundle(path: str | Path, device: str | torch.device = "cpu") -> ModelBundle:
    """Open model folder `path` (one-line ArtifactError when it is not one), in eval mode on `device`."""
    folder = Path(path)
    config = read_model_config(folder)
    tokenizer = load_tokenizer(folder)
    return ModelBundle(folder, config, load_model(folder, device), tokenizer, load_heads(folder, device),
                       read_heads(folder))
