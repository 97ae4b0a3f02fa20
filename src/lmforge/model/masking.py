"""Dynamic masking for the masked-LM objective (BERT, as made dynamic by RoBERTa).

The mask is drawn when a batch is drawn, not fixed when the data is prepared, so every epoch
sees different targets. The caller owns the generator: it advances with each call, and a
checkpoint that saves its state resumes to the same masks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

IGNORE_INDEX = -100
"""Label of positions that are not targets (the default `ignore_index` of cross-entropy)."""


def mask_tokens(input_ids: Tensor, *, mask_id: int, vocab_size: int, special_ids: Sequence[int],
                generator: torch.Generator, prob: float = 0.15) -> tuple[Tensor, Tensor]:
    """Dynamic BERT masking: returns (inputs, labels); labels = -100 where not a target.

    Each non-special token is a target with probability `prob`; a target becomes `mask_id`
    80% of the time, a random non-special token 10%, and stays itself 10% (so the model cannot
    learn that only [MASK] positions matter). Pass the pad id in `special_ids`: specials are
    never targets. `input_ids` is not modified.
    """
    excluded = torch.tensor([*special_ids, mask_id], device=input_ids.device)
    special = torch.isin(input_ids, excluded)
    chosen = (_uniform(input_ids, generator) < prob) & ~special
    labels = torch.where(chosen, input_ids, IGNORE_INDEX)

    action = _uniform(input_ids, generator)
    to_mask = chosen & (action < 0.8)
    to_random = chosen & (action >= 0.8) & (action < 0.9)
    pool = torch.arange(vocab_size, device=input_ids.device)
    pool = pool[~torch.isin(pool, excluded)]
    picks = torch.randint(len(pool), input_ids.shape, generator=generator, device=generator.device)
    random_tokens = pool[picks.to(input_ids.device)]

    inputs = torch.where(to_mask, mask_id, input_ids)
    inputs = torch.where(to_random, random_tokens, inputs)
    return inputs, labels


def _uniform(like: Tensor, generator: torch.Generator) -> Tensor:
    """U[0, 1) of `like`'s shape drawn on the generator's device, moved to `like`'s device."""
    return torch.rand(like.shape, generator=generator, device=generator.device).to(like.device)
