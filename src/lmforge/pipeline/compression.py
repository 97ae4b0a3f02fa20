"""The classifier made smaller three ways (INT8, a distilled student, a pruned model), measured side
by side, and exported for serving (ONNX and a Triton model repository)."""

from __future__ import annotations

from lmforge.artifacts import write_manifest
from lmforge.compress.distill import distill
from lmforge.compress.distill_config import DistillConfig
from lmforge.compress.prune import prune
from lmforge.compress.prune_config import PruneConfig
from lmforge.compress.quantize import QuantizeConfig, quantize
from lmforge.compress.report import ReportConfig, compress_report
from lmforge.config import to_dict
from lmforge.export.run import export_model
from lmforge.model.folder import read_model_config
from lmforge.pipeline.stages import Outcome, RunContext, complete, read_json


def quantize_stage(ctx: RunContext) -> Outcome:
    """INT8 weights: an ONNX Runtime export folder (onnx-int8), or a torchao model folder."""
    model, method = ctx.path("finetune", "classify"), ctx.cfg.compress.int8_method
    if method == "onnx-int8":
        out = ctx.root / "exports" / model.name / method
        if not complete(out):
            export_model(model, method, out)
        v = read_json(out / "verification.json")
        return Outcome({"model": ctx.relative(out)},
                       f"INT8 (ONNX Runtime): {v['size_ratio']:.2f}x smaller than fp32, max abs logit "
                       f"difference {max(v['max_abs_diff'].values()):.3f} on random inputs (accuracy: "
                       "compress-report)", {"verification": v})
    cfg = QuantizeConfig(model=model, method=method)
    if not complete(cfg.output):
        quantize(cfg)
    metrics = read_json(cfg.output / "metrics.json")
    size, check = metrics["size"], metrics["check"]
    return Outcome({"model": ctx.relative(cfg.output)},
                   f"INT8 {cfg.method}: {size['ratio']:.2f}x smaller, argmax agreement "
                   f"{check['argmax_agreement']:.3f} with the float model", {"size": size, "check": check})


def distill_stage(ctx: RunContext) -> Outcome:
    s, teacher, tasks = ctx.cfg.compress, ctx.path("finetune", "classify"), ctx.path("tasks", "classify")
    cfg = DistillConfig(teacher=teacher, student=str(ctx.cfg.model.preset or "tiny"), task="classify",
                        student_config={**_architecture(ctx), "n_layers": s.student_layers},
                        data=tasks / "train.tsv", dev=tasks / "dev.tsv", steps=s.distill_steps,
                        batch_size=ctx.cfg.finetune.batch_size, eval_every=ctx.cfg.finetune.eval_every,
                        device=ctx.cfg.device, precision=ctx.cfg.train.precision)
    if not complete(cfg.output):
        distill(cfg, resume="auto")
    metrics = read_json(cfg.output / "metrics.json")
    student, teacher = metrics["dev"]["accuracy"], metrics["teacher"]["dev"]["accuracy"]
    return Outcome({"model": ctx.relative(cfg.output)},
                   f"{s.student_layers}-layer student: dev accuracy {student:.3f} (teacher {teacher:.3f}), "
                   f"agreement {metrics['agreement']['agreement']:.3f}",
                   {"dev": metrics["dev"], "teacher_dev": metrics["teacher"]["dev"]})


def prune_stage(ctx: RunContext) -> Outcome:
    s = ctx.cfg.compress
    cfg = PruneConfig(model=ctx.path("finetune", "classify"), mode=s.prune_mode, sparsity=s.prune_sparsity,
                      steps=s.prune_steps, data=ctx.path("tasks", "classify") / "train.tsv",
                      batch_size=ctx.cfg.finetune.batch_size, device=ctx.cfg.device)
    if not complete(cfg.output):
        prune(cfg)
    m = read_json(cfg.output / "metrics.json")
    before, after = (m["dev"][when][m["metric"]] for when in ("before", "after"))
    return Outcome({"model": ctx.relative(cfg.output)},
                   f"{s.prune_mode} {m['sparsity']:.0%} pruned: parameters {m['parameters']['before']:,} -> "
                   f"{m['parameters']['after']:,}, dev {m['metric']} {before:.3f} -> {after:.3f}",
                   {"sparsity": m["sparsity"], "parameters": m["parameters"], "dev": m["dev"]})


def report_stage(ctx: RunContext) -> Outcome:
    """Size, memory, latency and test accuracy of the float classifier and its three variants."""
    out = ctx.root / "compression"
    models = [ctx.path(stage, "model") for stage in ("quantize", "distill", "prune")]
    if not complete(out):
        cfg = ReportConfig(models=[ctx.path("finetune", "classify"), *models], out=out,
                           data=ctx.path("tasks", "classify") / "test.tsv",
                           rounds=ctx.cfg.compress.report_rounds)
        compress_report(cfg)
        write_manifest(out, "compress-report", to_dict(cfg), parents=cfg.models)  # last: the folder is whole
    rows = read_json(out / "report.json")
    base = rows[0]
    figure = "; ".join(f"{r['name']} {base['latency_ms']['1'] / r['latency_ms']['1']:.2f}x faster, "
                       f"accuracy {r['quality']['accuracy']:.3f}" for r in rows[1:])
    return Outcome({"report": ctx.relative(out)}, f"vs float (accuracy {base['quality']['accuracy']:.3f}): "
                   + figure, {"rows": rows})


def export_stage(ctx: RunContext) -> Outcome:
    """The float classifier as ONNX and as a Triton model repository, each checked against PyTorch."""
    model = ctx.path("finetune", "classify")
    artifacts, diffs = {}, {}
    for fmt in ("onnx", "triton"):
        out = ctx.root / "exports" / model.name / fmt
        if not complete(out):
            export_model(model, fmt, out)
        figures = read_json(out / "verification.json")
        diffs[fmt] = max(v for f in figures.get("models", {fmt: figures}).values()
                         for v in f["max_abs_diff"].values())
        artifacts[fmt] = ctx.relative(out)
    figure = "max abs difference to PyTorch: " + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items())
    return Outcome(artifacts, figure, {"max_abs_diff": diffs})


def _architecture(ctx: RunContext) -> dict:
    """The pretrained model's own shape fields a preset student would otherwise take from the preset."""
    config = read_model_config(ctx.path("pretrain", "model"))
    return {k: getattr(config, k) for k in ("d_model", "n_heads", "d_ff", "position")}
