"""Dynamic BERT masking, through `Objective.prepare`, checked as a distribution, not by counts alone.

For several `mask_prob`, on ~1M tokens with fixed seeds (so each test is deterministic; the
p-value floor of 1e-4 is far below what the correct code gives and far above what a biased one
does):
- the target count, and the 80% [MASK] / 10% random / 10% kept split, within 5 binomial sigmas;
- the random replacement tokens are uniform over the non-special pool (chi-square);
- the target rate is the same at every position of the segment (chi-square);
- specials (and [MASK] itself) are never targets nor replacements, labels are the originals.
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import chi2_contingency, chisquare

from lmforge.model import mask_tokens
from lmforge.train.objectives import Objective

PAD, CLS, SEP, MASK = 0, 1, 2, 3
SPECIALS = (PAD, CLS, SEP)
VOCAB = 300
POOL = torch.arange(4, VOCAB)  # what a random replacement may be: every id but the specials and [MASK]
ROWS, T = 8192, 128
P_FLOOR = 1e-4


def corpus(rows: int = ROWS) -> torch.Tensor:
    """Pool tokens, uniform (so a replacement is uniform whatever it replaced), with specials mixed in."""
    generator = torch.Generator().manual_seed(0)
    ids = POOL[torch.randint(len(POOL), (rows, T), generator=generator)]
    ids[:, 0], ids[:, -1] = CLS, SEP
    lengths = torch.randint(T // 2, T, (rows,), generator=generator)  # right padding of varied length
    ids[torch.arange(T)[None, :] >= lengths[:, None]] = PAD
    ids[torch.rand(ids.shape, generator=generator) < 0.01] = MASK  # a literal [MASK] in the text
    return ids


def within_sigmas(count: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


@pytest.fixture(scope="module")
def ids() -> torch.Tensor:
    return corpus()


@pytest.mark.parametrize("prob", [0.1, 0.15, 0.3])
def test_masking_through_prepare_is_uniform_and_80_10_10(ids, prob):
    objective = Objective(kind="masked", mask_id=MASK, vocab_size=VOCAB, special_ids=SPECIALS,
                          mask_prob=prob, seed=7)
    original = ids.clone()
    inputs, labels = objective.prepare(ids, torch.zeros_like(ids), draw=11)
    assert torch.equal(ids, original)  # not modified in place

    special = torch.isin(ids, torch.tensor([*SPECIALS, MASK]))
    chosen = labels != -100
    assert not (chosen & special).any()
    assert torch.equal(labels[chosen], ids[chosen]) and torch.equal(inputs[~chosen], ids[~chosen])
    n = int(chosen.sum())
    masked = inputs[chosen] == MASK
    kept = inputs[chosen] == ids[chosen]
    replaced = ~masked & ~kept

    # Replacements: uniform over the pool. The originals are uniform too, so "any but itself" is uniform.
    tokens = inputs[chosen][replaced]
    assert torch.isin(tokens, POOL).all()
    counts = torch.bincount(tokens, minlength=VOCAB)[POOL]
    assert counts.sum() / len(POOL) >= 20  # enough per cell for the chi-square approximation
    p_tokens = chisquare(counts.numpy()).pvalue
    # Per position: the rate targets / non-special tokens is the same in every column (homogeneity
    # chi-square of the 2 x T table targets / non-targets; columns differ in how many are eligible).
    targets, eligible = chosen.sum(0), (~special).sum(0)
    live = eligible > 0
    p_positions = chi2_contingency(torch.stack([targets, eligible - targets])[:, live].numpy()).pvalue
    print(f"mask_prob {prob}: replacement p={p_tokens:.3g}, position p={p_positions:.4f}")
    assert p_tokens > P_FLOOR, f"replacement tokens are not uniform over the pool (p={p_tokens:.3g})"
    assert p_positions > P_FLOOR, f"target rate depends on the position (p={p_positions:.3g})"

    # Counts, within 5 binomial sigmas: targets among eligible tokens, then 80% [MASK] / 10% / 10%.
    assert within_sigmas(n, int((~special).sum()), prob)
    assert within_sigmas(int(masked.sum()), n, 0.8)
    assert within_sigmas(int(kept.sum()), n, 0.1 + 0.1 / len(POOL))  # a random pick may hit itself
    assert within_sigmas(int(replaced.sum()), n, 0.1 * (1 - 1 / len(POOL)))


@pytest.mark.parametrize("prob", [0.15, 0.3])
def test_a_data_parallel_slice_gets_the_rows_of_the_global_mask(ids, prob):
    objective = Objective(kind="masked", mask_id=MASK, vocab_size=VOCAB, special_ids=SPECIALS, seed=7,
                          mask_prob=prob)
    x = ids[:64]
    whole = objective.prepare(x, x, draw=5)
    for first in (0, 16, 48):
        part = objective.prepare(x[first:first + 16], x[first:first + 16], draw=5, rows=(first, 64))
        assert torch.equal(part[0], whole[0][first:first + 16])
        assert torch.equal(part[1], whole[1][first:first + 16])
    assert not torch.equal(objective.prepare(x, x, draw=6)[1], whole[1])  # a fresh mask per draw


def test_every_draw_is_a_fresh_mask_and_seeds_reproduce(ids):
    x = ids[:100]
    generator = torch.Generator().manual_seed(3)
    epoch1 = mask_tokens(x, mask_id=MASK, vocab_size=VOCAB, special_ids=[PAD], generator=generator)
    epoch2 = mask_tokens(x, mask_id=MASK, vocab_size=VOCAB, special_ids=[PAD], generator=generator)
    assert not torch.equal(epoch1[1], epoch2[1])

    def draw(seed):
        return mask_tokens(x, mask_id=MASK, vocab_size=VOCAB, special_ids=list(SPECIALS),
                           generator=torch.Generator().manual_seed(seed))

    (inputs, labels), (inputs_again, labels_again) = draw(5), draw(5)
    assert torch.equal(inputs, inputs_again) and torch.equal(labels, labels_again)


@pytest.mark.cuda
def test_masks_drawn_on_the_cpu_generator_apply_to_cuda_inputs_unchanged():
    """The data loader's generator stays on the CPU; inputs may live on the GPU. The masks must not
    depend on where the inputs are, and every output stays on the inputs' device."""
    x = torch.randint(7, 50, (8, 64), generator=torch.Generator().manual_seed(0))
    draw = {"mask_id": 4, "vocab_size": 50, "special_ids": tuple(range(7))}
    on_cpu = mask_tokens(x, generator=torch.Generator().manual_seed(1), **draw)
    on_gpu = mask_tokens(x.cuda(), generator=torch.Generator().manual_seed(1), **draw)
    assert all(t.device.type == "cuda" for t in on_gpu)
    assert all(torch.equal(a, b.cpu()) for a, b in zip(on_cpu, on_gpu, strict=True))
