"""Dynamic BERT masking: proportions, specials never touched, fresh mask per draw."""

from __future__ import annotations

import math

import torch

from lmforge.model import mask_tokens

PAD, CLS, SEP, MASK = 0, 1, 2, 3
SPECIALS = [PAD, CLS, SEP, MASK]
VOCAB = 1000


def corpus(n: int = 200_000) -> torch.Tensor:
    ids = torch.randint(4, VOCAB, (n // 100, 100), generator=torch.Generator().manual_seed(0))
    ids[:, 0], ids[:, -1], ids[:, 80:99] = CLS, SEP, PAD
    return ids


def draw(ids: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    return mask_tokens(ids, mask_id=MASK, vocab_size=VOCAB, special_ids=[PAD, CLS, SEP],
                       generator=torch.Generator().manual_seed(seed))


def within_sigmas(count: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


def test_proportions_are_15_percent_then_80_10_10():
    ids = corpus()
    original = ids.clone()
    inputs, labels = draw(ids, seed=1)
    torch.testing.assert_close(ids, original)  # not modified in place

    special = torch.isin(ids, torch.tensor(SPECIALS))
    chosen = labels != -100
    assert within_sigmas(int(chosen.sum()), int((~special).sum()), 0.15)
    assert not (chosen & special).any()
    assert torch.equal(labels[chosen], ids[chosen])
    assert torch.equal(inputs[~chosen], ids[~chosen])

    n = int(chosen.sum())
    masked = inputs[chosen] == MASK
    kept = inputs[chosen] == ids[chosen]
    replaced = ~masked & ~kept
    assert within_sigmas(int(masked.sum()), n, 0.8)
    assert within_sigmas(int(kept.sum()), n, 0.1 + 0.1 / (VOCAB - 4))  # a random pick may hit itself
    assert within_sigmas(int(replaced.sum()), n, 0.1 * (1 - 1 / (VOCAB - 4)))
    assert not torch.isin(inputs[chosen][replaced], torch.tensor(SPECIALS)).any()


def test_every_draw_is_a_fresh_mask_and_seeds_reproduce():
    ids = corpus(10_000)
    generator = torch.Generator().manual_seed(3)
    epoch1 = mask_tokens(ids, mask_id=MASK, vocab_size=VOCAB, special_ids=[PAD], generator=generator)
    epoch2 = mask_tokens(ids, mask_id=MASK, vocab_size=VOCAB, special_ids=[PAD], generator=generator)
    assert not torch.equal(epoch1[1], epoch2[1])

    (inputs, labels), (inputs_again, labels_again) = draw(ids, seed=5), draw(ids, seed=5)
    assert torch.equal(inputs, inputs_again) and torch.equal(labels, labels_again)
