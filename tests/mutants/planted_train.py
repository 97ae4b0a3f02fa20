"""Bugs in gradient clipping and seeding, and the tests that catch them."""

from plant import Planted

CLIPPING = "tests/unit/train/test_clipping.py"

PLANTED = [
    Planted(
        name="clip-off-still-clips",
        claim="grad_clip 0 turns clipping off",
        file="src/lmforge/train/engine.py",
        find="        if max_norm > 0 and norm > max_norm:\n",
        replace="        if max_norm >= 0 and norm > max_norm:\n",
        tests=[CLIPPING],
    ),
    Planted(
        name="clip-coefficient-inverted",
        claim="clipping scales gradients to max_norm, as torch's clip_grad_norm_ does",
        file="src/lmforge/train/engine.py",
        find="            coefficient = max_norm / (norm + 1e-6)\n",
        replace="            coefficient = norm / (max_norm + 1e-6)\n",
        tests=[CLIPPING],
    ),
    Planted(
        name="frozen-parameter-counted",
        claim="parameters without a gradient are left out of the norm",
        file="src/lmforge/train/engine.py",
        find="        if param.grad is None or (skip_tied_head and name == \"lm_head.weight\"):\n",
        replace="        if param.grad is None and (skip_tied_head and name == \"lm_head.weight\"):\n",
        tests=[CLIPPING],
    ),
    Planted(
        name="numpy-rng-not-seeded",
        claim="every RNG the checkpoint stores starts from the run's seed",
        file="src/lmforge/train/loop.py",
        find="    np.random.seed(seed % 2**32)\n",
        replace="",
        tests=["tests/unit/train/test_resume.py::test_kill_9_at_any_moment_then_resume_auto"],
    ),
]
