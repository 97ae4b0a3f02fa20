"""What an exported model takes and returns: the module every format exports, with named tensors.

Every format (ONNX, TorchScript, Triton, ExecuTorch) exports the same wrapper module under the same
input and output names, so a server can switch formats without changing how it calls the model.

- The language model is one *step* with the Transformer-XL recurrence memory as a tensor:
  `input_ids` [B, T] int64 and `mems` [B, L, M, D] float32 (the memory of each of the L layers,
  batch first so that Triton can batch it; M = 0 on the first step) give `logits` [B, T, V] and
  `new_mems` [B, L, M', D] with M' = min(M + T, window - 1). That is the cache
  `lmforge.model.generate` keeps, so feeding `new_mems` back one token at a time reproduces it.
- A task head (classify, ner, embed) takes `input_ids` and `attention_mask` [B, T] int64 (1 for
  real tokens, right padding) and gives `logits` [B, n_labels] (classify), `logits` [B, T, n_labels]
  (ner) or `embedding` [B, dim] (unit vectors), attending the way the head was trained.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from lmforge.export import ExportError
from lmforge.model.bundle import ModelBundle
from lmforge.model.heads import LM_TASKS, ContrastiveEmbeddingHead, MultiTaskModel
from lmforge.model.xl import Transformer


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    """numpy name: "int64" or "float32"."""
    dims: tuple[str | int, ...]
    """Fixed sizes as ints, dynamic axes by name; the first is always "batch"."""

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "dims": list(self.dims)}


@dataclass
class Signature:
    module: nn.Module
    """The wrapper every format exports, in eval mode; its forward's argument names are the input names."""
    head: str
    task: str
    """causal_lm, masked_lm, classify, ner or embed."""
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    cases: list[tuple[Tensor, ...]]
    """Sample inputs at several shapes; the first is the example the exporters trace."""
    settings: dict[str, Any] = field(default_factory=dict)
    """What a caller must know beyond the tensors (memory kept, attention direction)."""

    @property
    def is_lm(self) -> bool:
        return self.task in LM_TASKS

    def describe(self) -> dict[str, Any]:
        """The manifest's record of the interface."""
        return {
            "head": self.head,
            "task": self.task,
            **self.settings,
            "inputs": [s.describe() for s in self.inputs],
            "outputs": [s.describe() for s in self.outputs],
        }


class LanguageModelStep(nn.Module):
    """(input_ids [B, T], mems [B, L, M, D]) -> (logits [B, T, V], new_mems [B, L, M', D])."""

    def __init__(self, model: Transformer, causal: bool, keep: int):
        super().__init__()
        self.model = model
        self.causal = causal
        self.keep = keep

    def forward(self, input_ids: Tensor, mems: Tensor) -> tuple[Tensor, Tensor]:
        out = self.model(input_ids, list(mems.unbind(1)), causal=self.causal, mem_len=self.keep)
        return out.logits, torch.stack(out.mems, dim=1)


class HeadForward(nn.Module):
    """(input_ids [B, T], attention_mask [B, T]) -> the head's logits or embedding."""

    def __init__(self, model: MultiTaskModel, head: str):
        super().__init__()
        self.model = model
        self.head = head

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.model(self.head, input_ids, attention_mask.bool())[1]


def choose_head(bundle: ModelBundle, head: str | None) -> str:
    """`head` if the folder has it; else its only task head; else its LM head."""
    if head is not None:
        bundle.head(head)  # one-line ArtifactError naming the heads it has
        return head
    if len(bundle.heads) == 1:
        return next(iter(bundle.heads))
    if len(bundle.heads) > 1:
        raise ExportError(
            f"{bundle.folder}: has several task heads ({', '.join(bundle.heads)}); choose one with --head"
        )
    lm = next((name for name, entry in bundle.spec.items() if entry["task"] in LM_TASKS), None)
    if lm is None:
        raise ExportError(f"{bundle.folder}: heads.json lists no head to export")
    return lm


def signature(bundle: ModelBundle, head: str | None = None, seed: int = 0) -> Signature:
    """The export interface of `bundle`'s head `head` (see `choose_head`), with sample inputs."""
    name = choose_head(bundle, head)
    task = bundle.head(name)["task"]
    generator = torch.Generator().manual_seed(seed)
    if task in LM_TASKS:
        return _lm_signature(bundle, name, task, generator)
    return _head_signature(bundle, name, task, generator)


def _lm_signature(bundle: ModelBundle, head: str, task: str, generator: torch.Generator) -> Signature:
    config = bundle.config
    keep = config.context_len - 1  # generate()'s cache: a new token plus window - 1 remembered ones
    layers, width = config.n_layers, config.d_model
    t = min(5, config.seq_len)
    shapes = [
        (3, t, min(7, keep + 1 - t)),
        (1, min(8, config.seq_len), 0),
        (2, 1, keep),
        (1, 1, min(10, keep)),
    ]
    cases = [
        (
            torch.randint(config.vocab_size, (b, n), generator=generator),
            torch.randn(b, layers, m, width, generator=generator),
        )
        for b, n, m in shapes
    ]
    return Signature(
        module=LanguageModelStep(bundle.model, task == "causal_lm", keep).eval(),
        head=head,
        task=task,
        inputs=(
            TensorSpec("input_ids", "int64", ("batch", "seq")),
            TensorSpec("mems", "float32", ("batch", layers, "mem", width)),
        ),
        outputs=(
            TensorSpec("logits", "float32", ("batch", "seq", config.vocab_size)),
            TensorSpec("new_mems", "float32", ("batch", layers, "kept", width)),
        ),
        cases=cases,
        settings={"mem_len": keep, "causal": task == "causal_lm", "n_layers": layers, "d_model": width},
    )


def _head_signature(bundle: ModelBundle, head: str, task: str, generator: torch.Generator) -> Signature:
    usage = bundle.usage(head)
    longest = min(usage.get("max_len", bundle.config.seq_len), bundle.config.context_len)
    module = bundle.heads[head]
    cases = [
        _padded_batch(b, min(n, longest), bundle.config.vocab_size, generator)
        for b, n in ((3, 9), (1, 4), (2, longest))
    ]
    if isinstance(module, ContrastiveEmbeddingHead):
        output = TensorSpec("embedding", "float32", ("batch", module.proj.out_features))
    elif task == "ner":
        output = TensorSpec("logits", "float32", ("batch", "seq", module.classifier.out_features))
    else:
        output = TensorSpec("logits", "float32", ("batch", module.classifier.out_features))
    causal = usage.get("causal", False)
    return Signature(
        module=HeadForward(bundle.task_model(head), head).eval(),
        head=head,
        task=task,
        inputs=(
            TensorSpec("input_ids", "int64", ("batch", "seq")),
            TensorSpec("attention_mask", "int64", ("batch", "seq")),
        ),
        outputs=(output,),
        cases=cases,
        settings={"causal": causal, "max_len": longest, "labels": bundle.head(head).get("labels", [])},
    )


def _padded_batch(batch: int, length: int, vocab: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Random ids, the first row full and each later one shorter by a row (right padding)."""
    ids = torch.randint(vocab, (batch, length), generator=generator)
    real = torch.arange(length)[None, :] < (length - torch.arange(batch)).clamp(min=1)[:, None]
    return ids * real, real.long()
