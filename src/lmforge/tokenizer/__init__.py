"""Tokenizer stage: train a byte-level BPE, pack documents into token shards, read them back.

`TokenStream` and `SegmentBatches` are loaded on first use: they return torch tensors, and
training or applying a tokenizer should not pay for importing torch.
"""

from __future__ import annotations

from typing import Any

from lmforge.tokenizer.config import PackConfig, PackSettings, TokenizerSettings, TokenizerTrainConfig
from lmforge.tokenizer.pack import pack_documents
from lmforge.tokenizer.stage import run_pack, run_train
from lmforge.tokenizer.train import SPECIAL_TOKENS, special_ids, train_tokenizer

__all__ = [
    "SPECIAL_TOKENS",
    "PackConfig",
    "PackSettings",
    "SegmentBatches",
    "TokenStream",
    "TokenizerSettings",
    "TokenizerTrainConfig",
    "pack_documents",
    "run_pack",
    "run_train",
    "special_ids",
    "train_tokenizer",
]


def __getattr__(name: str) -> Any:
    if name in ("TokenStream", "SegmentBatches"):
        from lmforge.tokenizer import loader

        return getattr(loader, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
