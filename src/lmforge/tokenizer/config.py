"""Settings of `lmforge tokenizer train` and `lmforge tokenizer pack`."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from lmforge.config import Config
from lmforge.tokenizer.train import MIN_VOCAB


class TokenizerSettings(Config):
    """How the tokenizer is learned, whatever it is learned from (`lmforge run` nests these)."""

    vocab_size: int = Field(8192, ge=MIN_VOCAB)
    """Vocabulary size, counting the 7 special tokens and the 256 byte tokens."""
    min_frequency: int = Field(2, ge=1)
    """A pair of tokens is merged only if it occurs at least this often."""


class TokenizerTrainConfig(TokenizerSettings):
    data: list[Path] = Field(min_length=1)
    """Document files or folders (.jsonl, .jsonl.gz, .txt) to learn the vocabulary from."""
    out: Path
    """Tokenizer folder to create (tokenizer.json + manifest.json); must not exist yet."""


class PackSettings(Config):
    """How documents are packed, whatever they are (`lmforge run` nests these)."""

    val_fraction: float = Field(0.05, gt=0, lt=1)
    """Share of documents (chosen by a hash of their id) held out for validation."""
    shard_tokens: int = Field(50_000_000, gt=0)
    """A shard is closed once it holds this many tokens (50M uint16 tokens = 100 MB)."""


class PackConfig(PackSettings):
    data: list[Path] = Field(min_length=1)
    """Document files or folders (.jsonl, .jsonl.gz, .txt) to encode."""
    tokenizer: Path
    """Tokenizer folder (or its tokenizer.json) made by `lmforge tokenizer train`."""
    out: Path
    """Token folder to create (shards, index.json, manifest.json); must not exist yet."""
