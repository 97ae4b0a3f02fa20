"""Bugs that break exact resume, and the tests in tests/unit/train/test_resume.py that catch them."""

from plant import Planted

RESUMED = "tests/unit/train/test_resume.py::test_resumed_from_a_later_checkpoint_equals_the_uninterrupted_run"
DAMAGED = "tests/unit/train/test_resume.py::test_a_damaged_newest_checkpoint_is_skipped"
KILLS = "tests/unit/train/test_resume.py"

PLANTED = [
    Planted(
        name="rng-not-restored",
        claim="resume restores every RNG stream (dropout masks continue)",
        file="src/lmforge/train/checkpoint.py",
        find="        _restore_rng(per_rank[layout.rank])\n        return\n",
        replace="        return\n",
        tests=[RESUMED],
    ),
    Planted(
        name="draw-between-restore-and-first-step",
        claim="nothing draws from the global RNG between restore and the first step",
        file="src/lmforge/train/trainer.py",
        find="        engine.module.train()\n",
        replace="        engine.module.train()\n        torch.rand(1)\n",
        tests=[RESUMED],
    ),
    Planted(
        name="plateau-not-saved",
        claim="the plateau state (scale, best, bad evaluations) is in the checkpoint",
        file="src/lmforge/train/trainer.py",
        find="        state.plateau = plateau.state_dict()\n",
        replace="",
        tests=[f"{RESUMED}[causal-accumulating-plateau]"],
    ),
    Planted(
        name="memory-not-restored",
        claim="the recurrence memory of the whole batch is in the checkpoint",
        file="src/lmforge/train/trainer.py",
        find="        return state, carry or None\n",
        replace="        return state, None\n",
        tests=[f"{RESUMED}[causal]"],
    ),
    Planted(
        name="optimizer-moments-not-restored",
        claim="AdamW moments are restored by parameter name",
        file="src/lmforge/train/checkpoint.py",
        find="    _restore_optimizer(engine, optimizer, tensors, meta[\"optimizer\"])\n",
        replace="",
        tests=[f"{RESUMED}[causal]"],
    ),
    Planted(
        name="damaged-checkpoint-not-skipped",
        claim="a damaged newest checkpoint is skipped for the one before it",
        file="src/lmforge/train/checkpoint.py",
        find="        if _intact(path):\n",
        replace="        if True:\n",
        tests=[DAMAGED],
    ),
    Planted(
        name="killed-write-blocks-next-save",
        claim="what a write killed midway leaves behind neither resumes nor blocks the next save",
        file="src/lmforge/train/checkpoint.py",
        find="        shutil.rmtree(tmp, ignore_errors=True)\n        tmp.mkdir(parents=True)\n",
        replace="        tmp.mkdir(parents=True)\n",
        tests=[f"{KILLS}::test_killed_inside_a_checkpoint_write_resumes_from_the_previous_one"],
    ),
]
