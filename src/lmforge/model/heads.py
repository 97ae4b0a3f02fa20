"""Task heads on the shared backbone, the multi-task wrapper, and the heads.json description.

The backbone's final hidden states [B, T, D] feed every head. The causal and masked LM need no
head of their own: they reuse the backbone's LM logits (tied to the token embedding). Each head
below is a small module with a `loss`; `MultiTaskModel.forward` runs backbone + head.

`heads_spec` writes what a model folder's heads.json holds (task, sizes, label names), and
`build_heads` rebuilds the same modules from it, so compression, export and serving know what a
model can do. Entries are keyed by head name; pretraining's `{"lm": {"task": "causal_lm"}}` is
such an entry too, without a module.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmforge.model.masking import IGNORE_INDEX
from lmforge.model.xl import Transformer

Pooling = Literal["mean", "cls", "last"]

LM_TASKS = ("causal_lm", "masked_lm")
"""Tasks answered by the backbone's tied LM logits; they have no head module."""


def pool(hidden: Tensor, padding_mask: Tensor | None, how: Pooling) -> Tensor:
    """One vector per sequence from hidden [B, T, D]; `padding_mask` [B, T] is True for real tokens.

    "mean" averages the real tokens only. "cls" takes position 0, which under causal attention
    has seen nothing but itself, so it suits bidirectional encoders only. "last" takes the last
    real token (right padding assumed): under causal attention the only one that saw everything.
    """
    if padding_mask is None:
        padding_mask = torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
    real = padding_mask.to(hidden.dtype).unsqueeze(-1)
    if how == "mean":
        return (hidden * real).sum(1) / real.sum(1).clamp(min=1.0)
    if how == "cls":
        return hidden[:, 0]
    last = padding_mask.long().sum(1).sub(1).clamp(min=0)
    return hidden[torch.arange(hidden.size(0), device=hidden.device), last]


class SequenceClassificationHead(nn.Module):
    """Pooled representation -> label logits [B, n_labels].

    Mean pooling by default: it works whether the backbone attends causally or not, and it was the
    best pooling for sentence tasks in Sentence-BERT (Reimers & Gurevych 2019). Dropout 0.1 before
    the classifier as in BERT (Devlin et al. 2019).
    """

    task = "classify"

    def __init__(self, d_model: int, n_labels: int, pooling: Pooling = "mean", dropout: float = 0.1):
        super().__init__()
        self.pooling: Pooling = pooling
        self.drop = nn.Dropout(dropout)
        self.classifier = nn.Linear(d_model, n_labels)

    def forward(self, hidden: Tensor, padding_mask: Tensor | None) -> Tensor:
        return self.classifier(self.drop(pool(hidden, padding_mask, self.pooling)))

    def loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        return F.cross_entropy(logits, labels)

    def settings(self) -> dict[str, Any]:
        return {"n_labels": self.classifier.out_features, "pooling": self.pooling, "dropout": self.drop.p}


class TokenClassificationHead(nn.Module):
    """Per-token label logits [B, T, n_labels] for BIO tagging (NER).

    Only the first sub-word piece of a word carries its tag; continuation pieces and pads are
    labelled -100 and ignored by the loss, as in BERT's NER setup.
    """

    task = "ner"

    def __init__(self, d_model: int, n_labels: int, dropout: float = 0.1):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.classifier = nn.Linear(d_model, n_labels)

    def forward(self, hidden: Tensor, padding_mask: Tensor | None) -> Tensor:
        return self.classifier(self.drop(hidden))

    def loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)

    def settings(self) -> dict[str, Any]:
        return {"n_labels": self.classifier.out_features, "dropout": self.drop.p}


class ContrastiveEmbeddingHead(nn.Module):
    """Mean-pooled representation -> linear projection -> unit vector [B, dim], for retrieval.

    Trained with InfoNCE over in-batch negatives (SimCSE, Gao et al. 2021). Temperature 0.05 is
    the paper's default; unit vectors make the dot product a cosine similarity.
    """

    task = "embed"

    def __init__(self, d_model: int, dim: int, temperature: float = 0.05):
        super().__init__()
        self.temperature = temperature
        self.proj = nn.Linear(d_model, dim)

    def forward(self, hidden: Tensor, padding_mask: Tensor | None) -> Tensor:
        return F.normalize(self.proj(pool(hidden, padding_mask, "mean")), dim=-1)

    def loss(self, anchor: Tensor, positive: Tensor) -> Tensor:
        """InfoNCE: row i of `anchor` should match row i of `positive` among all rows.

        Unsupervised SimCSE passes two encodings of the same batch whose only difference is the
        dropout mask; supervised training passes the encodings of paired sentences.
        """
        scores = anchor @ positive.T / self.temperature
        return F.cross_entropy(scores, torch.arange(len(anchor), device=anchor.device))

    def settings(self) -> dict[str, Any]:
        return {"dim": self.proj.out_features, "temperature": self.temperature}


HEAD_TYPES: dict[str, type[nn.Module]] = {
    head.task: head
    for head in (SequenceClassificationHead, TokenClassificationHead, ContrastiveEmbeddingHead)
}


class MultiTaskModel(nn.Module):
    """A Transformer backbone and named task heads, one forward per task.

    `causal` sets the attention of the classify/ner/embed tasks. The default is bidirectional:
    as an encoder every token sees the whole sentence, which is what BERT-style fine-tuning
    does; keep it causal to fine-tune a model exactly as it was pretrained for generation.
    Memory is never used: fine-tuning examples are independent sentences.
    """

    def __init__(self, backbone: Transformer, heads: nn.ModuleDict, causal: bool = False):
        super().__init__()
        self.backbone = backbone
        self.heads = heads
        self.causal = causal

    def forward(self, task: str, idx: Tensor, padding_mask: Tensor | None = None, *,
                     labels: Tensor | None = None, positive: Tensor | None = None,
                     positive_mask: Tensor | None = None) -> tuple[Tensor | None, Tensor]:
        """(loss, outputs) for `task`: "causal_lm", "masked_lm" or the name of a head.

        Outputs are LM logits [B, T, V], label logits or unit embeddings. The loss is None when
        no targets are given. LM `labels` [B, T] are aligned with the logits (already shifted for
        the causal LM), -100 where not a target. For embeddings, `positive` holds the paired
        sentences; pass `idx` itself in train mode for unsupervised SimCSE (dropout views).
        """
        if task in LM_TASKS:
            out = self.backbone(idx, causal=task == "causal_lm", padding_mask=padding_mask, mem_len=0)
            return (None if labels is None else lm_loss(out.logits, labels)), out.logits
        head = self.heads[task]
        outputs = head(self.encode(idx, padding_mask), padding_mask)
        if isinstance(head, ContrastiveEmbeddingHead):
            if positive is None:
                return None, outputs
            return head.loss(outputs, head(self.encode(positive, positive_mask), positive_mask)), outputs
        return (None if labels is None else head.loss(outputs, labels)), outputs

    def encode(self, idx: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        """Final hidden states [B, T, D] with this model's attention direction and no memory."""
        return self.backbone(idx, causal=self.causal, padding_mask=padding_mask, mem_len=0).hidden


def lm_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy over the target positions (labels != -100)."""
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)


def heads_spec(heads: nn.ModuleDict, labels: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
    """The heads.json entries of `heads`: task, settings and, for classifiers, the label names.

    `labels` maps a classifier head's name to its label names in class-index order.
    """
    spec = {}
    for name, head in heads.items():
        entry = {"task": head.task, **head.settings()}
        if "n_labels" in entry:
            names = labels.get(name, [])
            if len(names) != entry["n_labels"]:
                raise ValueError(f"head {name!r} has {entry['n_labels']} labels but {len(names)} names")
            entry["labels"] = list(names)
        spec[name] = entry
    return spec


def build_heads(spec: dict[str, dict[str, Any]], d_model: int) -> nn.ModuleDict:
    """Rebuild the head modules a heads.json describes (LM entries have none)."""
    heads = nn.ModuleDict()
    for name, entry in spec.items():
        task = entry["task"]
        if task in LM_TASKS:
            continue
        if task not in HEAD_TYPES:
            raise ValueError(f"head {name!r}: unknown task {task!r}; known: {', '.join(HEAD_TYPES)}")
        settings = {key: value for key, value in entry.items() if key not in ("task", "labels", "usage")}
        heads[name] = HEAD_TYPES[task](d_model, **settings)
    return heads


def shared_layer(backbone: Transformer) -> nn.Parameter:
    """The last shared weight matrix (the last block's MLP output): where GradNorm measures.

    Chen et al. (2018) take the last layer shared by all tasks; the final LayerNorm after it
    only holds per-channel gains, so the last matrix is the useful choice.
    """
    return backbone.blocks[-1].mlp.w_out.weight
