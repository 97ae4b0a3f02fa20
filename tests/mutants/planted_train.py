"""Bugs in gradient clipping, seeding and the trainer's plug points, and the tests that catch them."""

from plant import Planted

CLIPPING = "tests/unit/train/test_clipping.py"
TRAINER = "tests/unit/train/test_trainer.py"

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
        file="src/lmforge/train/trainer.py",
        find="    np.random.seed(seed % 2**32)\n",
        replace="",
        tests=["tests/unit/train/test_resume.py::test_kill_9_at_any_moment_then_resume_auto"],
    ),
    Planted(
        name="regulariser-on-every-micro-batch",
        claim="a regulariser joins the step's gradient once, whatever the accumulation",
        file="src/lmforge/train/engine.py",
        find="            if last and regulariser is not None:\n",
        replace="            if regulariser is not None:\n",
        tests=[f"{TRAINER}::test_regulariser_adds_the_pull_to_the_whole_batch_gradient"],
    ),
    Planted(
        name="teacher-outputs-not-passed",
        claim="the teacher's outputs reach the objective's loss",
        file="src/lmforge/train/engine.py",
        find="                loss, carried = objective.loss(self.module, rows, carry[k] if carry else None, taught)\n",
        replace="                loss, carried = objective.loss(self.module, rows, carry[k] if carry else None,\n"
                "                                               taught if k else taught * 1.01)\n",
        tests=[f"{TRAINER}::test_teacher_logits_reach_the_loss_and_the_teacher_stays_frozen"],
    ),
    Planted(
        name="callback-state-not-restored",
        claim="a step callback's state survives a resume",
        file="src/lmforge/train/trainer.py",
        find="                callback.load_state_dict(state.callbacks[callback.name])\n",
        replace="                pass\n",
        tests=[f"{TRAINER}::test_callback_state_is_checkpointed_and_a_resumed_run_is_bit_identical"],
    ),
    Planted(
        name="multitask-task-mean-per-replica",
        claim="over data-parallel replicas, each task's loss is the mean over the whole batch",
        file="src/lmforge/train/multitask.py",
        find="layout.settings.dp, engine.count_targets,",
        replace="layout.settings.dp, lambda n: n * layout.settings.dp,",
        tests=["tests/dist/test_parallel_finetune.py::test_multitask_over_replicas_matches_single_process"],
    ),
    Planted(
        name="evaluate-ignores-head-usage",
        claim="evaluate runs each head of a folder the way it was trained",
        file="src/lmforge/train/finetune.py",
        find="    max_len = usage.get(\"max_len\", bundle.config.seq_len)\n",
        replace="    max_len = bundle.config.seq_len\n",
        tests=["tests/unit/train/test_multitask.py::"
               "test_evaluate_scores_each_head_of_a_multitask_folder_the_way_it_was_trained"],
    ),
]
