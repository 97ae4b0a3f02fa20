"""Byte-level BPE tokenizer (Hugging Face `tokenizers`) with the special tokens every stage shares.

Byte-level means every string, Chinese included, maps to bytes before merging: there is no
unknown character, and decode(encode(text)) gives back exactly the text. No normaliser runs,
so what the curation stage wrote is what the model sees.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from lmforge.artifacts import ArtifactError

SPECIAL_TOKENS = ["<pad>", "<unk>", "<bos>", "<eos>", "<mask>", "<cls>", "<sep>"]
"""Their ids are 0..6 in this order; the model and the packer rely on it."""
MIN_VOCAB = len(SPECIAL_TOKENS) + 256
"""Specials plus the 256 byte symbols: the smallest vocabulary that can encode everything."""


def train_tokenizer(texts: Iterable[str], vocab_size: int = 8192, min_frequency: int = 2,
                    show_progress: bool = True) -> Tokenizer:
    """Learn BPE merges from `texts` (streamed once) up to `vocab_size` tokens."""
    if vocab_size < MIN_VOCAB:
        raise ValueError(f"vocab_size {vocab_size} is too small: need at least {MIN_VOCAB} "
                         f"({len(SPECIAL_TOKENS)} special tokens + 256 bytes)")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    special_ids(tokenizer)
    return tokenizer


def special_ids(tokenizer: Tokenizer) -> dict[str, int]:
    """Ids of the special tokens by bare name ("pad", "eos", ...); checks they are 0..6."""
    ids = {token.strip("<>"): tokenizer.token_to_id(token) for token in SPECIAL_TOKENS}
    if list(ids.values()) != list(range(len(SPECIAL_TOKENS))):
        raise ArtifactError(f"tokenizer special tokens {ids} are not {SPECIAL_TOKENS} at ids 0..6; "
                            "was it trained by lmforge?")
    return ids
