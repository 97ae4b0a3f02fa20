"""Planted bugs of the distributed-layout checks (tests/dist/test_parallel_training.py): each one
only changes what a parallel layout computes, so the single-process reference stays right and the
layout must drift from it. Run with `python tests/mutants/plant.py --area dist`."""

from plant import Planted

LAYOUT = "tests/dist/test_parallel_training.py::test_layout_matches_single_process[{}]"
ENGINE = "src/lmforge/train/engine.py"
LAUNCH = "src/lmforge/train/launch.py"
HARD_KILL = "tests/dist/test_parallel_training.py::test_hard_killed_parallel_run_resumes_to_the_single_process_trajectory"
LOOPBACK = ("tests/dist/test_parallel_training.py::"
            "test_local_launch_binds_gloo_to_loopback_unless_told_otherwise[None]")

PLANTED = [
    Planted(
        name="dist-grads-x2-ddp-sums",
        claim="data-parallel gradients are averaged over replicas, not summed (here: x2 at dp=2)",
        file=ENGINE,
        find="        self.scale = self.layout.settings.dp / targets",
        replace="        self.scale = self.layout.settings.dp ** 2 / targets",
        tests=[LAYOUT.format("ddp")],
    ),
    Planted(
        name="dist-grad-norm-x1.5",
        claim="the global gradient norm over shards and stages equals one process's",
        file=ENGINE,
        find="    return float(squares.sqrt())",
        replace="    return float(squares.sqrt()) * (1.5 if layout.distributed else 1.0)",
        tests=[LAYOUT.format("fsdp")],
    ),
    Planted(
        name="dist-grad-norm-x0.8",
        claim="the global gradient norm over shards and stages equals one process's",
        file=ENGINE,
        find="    return float(squares.sqrt())",
        replace="    return float(squares.sqrt()) * (0.8 if layout.distributed else 1.0)",
        tests=[LAYOUT.format("hsdp")],
    ),
    Planted(
        name="dist-ddp-accumulation-never-syncs",
        claim="under DDP with accumulation, the last micro-batch all-reduces the accumulated gradients",
        file=ENGINE,
        find='        if hasattr(self.module, "no_sync") and not last:',
        replace='        if hasattr(self.module, "no_sync"):',
        tests=[LAYOUT.format("ddp-accumulating")],
    ),
    Planted(
        name="dist-fsdp-accumulation-never-resyncs",
        claim="under FSDP with accumulation, gradient sync is re-enabled for the last micro-batch",
        file=ENGINE,
        find="            self.module.set_requires_gradient_sync(last)",
        replace="            if not last:\n                self.module.set_requires_gradient_sync(False)",
        tests=[LAYOUT.format("fsdp-accumulating")],
    ),
    Planted(
        name="dist-targets-counted-per-tp-rank",
        claim="the loss normaliser counts every target of the global batch once, whatever the layout",
        file=ENGINE,
        find="[float(local) if first_tp0 else 0.0]",
        replace="[float(local) if self.layout.first_stage else 0.0]",
        tests=[LAYOUT.format("tp-masked-lm")],
    ),
    Planted(
        name="dist-pp-tied-head-norm-twice",
        claim="under pipeline parallel the tied embedding/LM-head gradient counts once in the norm",
        file=ENGINE,
        find="        norm = global_grad_norm(self.core, self.layout, skip_tied_head=self.stage is not None)",
        replace="        norm = global_grad_norm(self.core, self.layout, skip_tied_head=False)",
        tests=[LAYOUT.format("pp-4-stages")],
    ),
    Planted(
        name="dist-pp-tied-grads-not-summed",
        claim="under pipeline parallel the embedding and LM-head copies take the same summed gradient",
        file="src/lmforge/parallel/pipeline.py",
        find="    dist.all_reduce(grad, group=group)",
        replace="    pass",
        tests=[LAYOUT.format("pp-gpipe")],
    ),
    Planted(
        name="dist-workers-outlive-launcher",
        claim="a kill -9 of `lmforge pretrain --nproc` takes its torchrun workers with it",
        file=LAUNCH,
        find="    exit_with_parent()\n",
        replace="",
        tests=[HARD_KILL],
    ),
    Planted(
        name="dist-local-launch-off-loopback",
        claim="a one-machine `--nproc` run binds gloo to the loopback interface",
        file=LAUNCH,
        find='    if loopback and "GLOO_SOCKET_IFNAME" not in env:\n        env["GLOO_SOCKET_IFNAME"] = loopback\n',
        replace="",
        tests=[LOOPBACK],
    ),
]
