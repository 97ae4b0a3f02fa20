"""The two tokenizer stages as artifact-to-artifact steps: documents -> tokenizer -> token shards.

Each writes its folder atomically, then its manifest (config, parents with their sha256): a
folder without a manifest is one whose stage did not finish.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from lmforge.artifacts import atomic_dir, load_tokenizer, write_manifest
from lmforge.config import to_dict
from lmforge.data.documents import read_documents
from lmforge.tokenizer.config import PackConfig, TokenizerTrainConfig
from lmforge.tokenizer.pack import pack_documents
from lmforge.tokenizer.train import SPECIAL_TOKENS, train_tokenizer


def run_train(cfg: TokenizerTrainConfig) -> Path:
    """Train on the documents of `cfg.data`; write `cfg.out/tokenizer.json`."""
    texts = (doc["text"] for doc in read_documents(cfg.data))
    tokenizer = train_tokenizer(texts, cfg.vocab_size, cfg.min_frequency)
    with atomic_dir(cfg.out) as tmp:
        tokenizer.save(str(tmp / "tokenizer.json"))
    write_manifest(cfg.out, stage="tokenizer.train", config=to_dict(cfg), parents=list(cfg.data),
                   extra={"vocab_size": tokenizer.get_vocab_size(), "special_tokens": SPECIAL_TOKENS})
    return cfg.out


def run_pack(cfg: PackConfig, say: Callable[[str], None] = print) -> Path:
    """Encode the documents of `cfg.data` into train/val token shards in `cfg.out`.

    Says so when validation had to be the tail of the token stream (too few documents to hold
    whole ones out), since its perplexity then measures the end of the corpus only.
    """
    index = pack_documents(read_documents(cfg.data), load_tokenizer(cfg.tokenizer), cfg.out,
                           cfg.val_fraction, cfg.shard_tokens)
    tokens = {split: info["n_tokens"] for split, info in index["splits"].items()}
    if index["val_split"] == "tail":
        say(f"[pack] too few documents to hold whole ones out: validation is the last {tokens['val']:,} "
            f"tokens ({cfg.val_fraction:.0%}) of the token stream")
    write_manifest(cfg.out, stage="tokenizer.pack", config=to_dict(cfg), parents=[*cfg.data, cfg.tokenizer],
                   extra={"tokens": tokens, "val_split": index["val_split"]})
    return cfg.out
