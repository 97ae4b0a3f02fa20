"""`lmforge`: one thin verb per lifecycle stage. Each parses, loads its config, calls the stage.

Options reach a config as typed values (`config.load(values=...)`), never as YAML text, so a
path is taken exactly as given. Every `LmforgeError` (bad config, bad data, bad artifact,
diverged training) prints one line naming the file/key and exits with status 1; anything else
is a bug and keeps its traceback. Stages are imported inside the verbs, so each verb pays only
for the imports it uses and `lmforge --help` for none.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from lmforge.cli_common import (
    ConfigArg,
    DeviceOpt,
    NprocOpt,
    PrintOpt,
    ResumeOpt,
    SetOpt,
    given,
    guarded,
)
from lmforge.cli_improve import abtest_app, improve_app, label_cmd

app = typer.Typer(help="lmforge: from a raw text corpus to a trained, sampled language model; one verb "
                  "per lifecycle stage.", no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False)
tokenizer_app = typer.Typer(help="Train a tokenizer, or pack documents into token shards.",
                            no_args_is_help=True)
model_app = typer.Typer(help="Inspect model presets.", no_args_is_help=True)
app.add_typer(tokenizer_app, name="tokenizer")
app.add_typer(model_app, name="model")
parallel_app = typer.Typer(help="Plan parallel layouts.", no_args_is_help=True)
app.add_typer(parallel_app, name="parallel")
app.add_typer(improve_app, name="improve")
app.add_typer(abtest_app, name="abtest")
app.command("label")(label_cmd)

@app.command()
@guarded
def run(config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML run config.")] = None,
        set_: SetOpt = None, print_config: PrintOpt = False) -> None:
    """The whole lifecycle on the built-in corpus (or corpus.sources): data -> model -> compressed,
    exported, served, improved and A/B-tested model, with an HTML report. Re-running resumes."""
    from lmforge.config import commented_yaml, load
    from lmforge.pipeline import RunConfig, run_pipeline

    cfg = load(RunConfig, config, set_)
    if print_config:
        typer.echo(commented_yaml(cfg))
        return
    summary = run_pipeline(cfg, say=typer.echo)
    if "pretrain" in summary.outcomes:
        typer.echo(f"sample: {summary.outcomes['pretrain'].figures['sample']}")
    typer.echo(f"report: {summary.report}")


@app.command("report")
@guarded
def report_cmd(run_folder: Annotated[Path, typer.Argument(help="Run folder (runs/<name>).")]) -> None:
    """Write RUN/report/index.html: one self-contained page built from the run's artifacts."""
    from lmforge.artifacts import ArtifactError
    from lmforge.report import build_report

    if not (run_folder / "logs" / "stages.jsonl").is_file():
        raise ArtifactError(f"{run_folder}: not a run folder of `lmforge run` (no logs/stages.jsonl)")
    typer.echo(f"report: {build_report(run_folder)}")


@app.command("pretrain")
@guarded
def pretrain_cmd(config: ConfigArg = None, set_: SetOpt = None, print_config: PrintOpt = False,
                 resume: ResumeOpt = "auto", nproc: NprocOpt = 1) -> None:
    """Pretrain a model on packed tokens; checkpoints, metrics and the model folder under OUT."""
    from lmforge.config import commented_yaml, load
    from lmforge.train import PretrainConfig, pretrain

    cfg = load(PretrainConfig, config, set_)
    if print_config:
        typer.echo(commented_yaml(cfg))
        return
    if nproc > 1:
        from lmforge.train.launch import launch

        raise typer.Exit(launch("pretrain", cfg, nproc, resume))
    result = pretrain(cfg, resume=None if resume == "none" else resume)
    typer.echo(f"validation perplexity: {result.ppl_after:,.2f} after {result.steps} steps")
    typer.echo(f"model folder: {result.model_dir}")


@app.command("curate")
@guarded
def curate_cmd(config: ConfigArg = None, set_: SetOpt = None, print_config: PrintOpt = False) -> None:
    """Clean, filter, deduplicate and anonymise raw sources into a dataset folder (resumable).

    On the built-in corpus the report also scores the run against the corpus's planted truth."""
    from lmforge.config import commented_yaml, load
    from lmforge.data.curate import CurateConfig, curate
    from lmforge.data.synthetic import truth_scorer

    cfg = load(CurateConfig, config, set_)
    if print_config:
        typer.echo(commented_yaml(cfg))
        return
    result = curate(cfg, scorer=truth_scorer(cfg.sources))
    typer.echo(f"{result.n_input:,} documents in, {result.n_kept:,} kept, "
               f"{sum(result.removed.values()):,} removed; report: {result.out / 'report.md'}")


@app.command("generate")
@guarded
def generate_cmd(
    model: Annotated[Path, typer.Argument(help="Model folder.")],
    prompt: Annotated[str, typer.Option(help="Text to continue.")] = "",
    max_tokens: Annotated[int, typer.Option(min=1, help="Tokens to generate.")] = 50,
    temperature: Annotated[float, typer.Option(min=0.0, help="0 = greedy.")] = 0.8,
    top_k: Annotated[int | None, typer.Option(min=1, help="Sample from the k likeliest.")] = None,
    top_p: Annotated[float | None, typer.Option(min=0.0, max=1.0, help="Nucleus mass.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for reproducible sampling.")] = None,
    device: DeviceOpt = "auto",
) -> None:
    """Continue a prompt with a model folder (cached recurrence: one step per new token)."""
    from lmforge.device import resolve_device
    from lmforge.model import generate
    from lmforge.model.bundle import load_bundle

    bundle = load_bundle(model, resolve_device(device))
    tokenizer = bundle.tokenizer
    ids = tokenizer.encode(prompt).ids or [tokenizer.token_to_id("<bos>")]
    new = generate(bundle.model, ids, max_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                   seed=seed, eos_id=tokenizer.token_to_id("<eos>"))
    typer.echo(tokenizer.decode(ids + new))


TaskOpt = Annotated[str, typer.Option("--task", help="classify, ner or embed.")]


@app.command("finetune")
@guarded
def finetune_cmd(
    model: Annotated[Path, typer.Argument(help="Source model folder.")],
    task: TaskOpt,
    data: Annotated[Path, typer.Option("--data", help="Training file (TSV/CSV/JSONL or CoNLL).")],
    dev: Annotated[Path | None, typer.Option(help="Dev file (default: 10% of train).")] = None,
    test: Annotated[Path | None, typer.Option(help="Test file, scored with the best weights.")] = None,
    out: Annotated[Path | None, typer.Option(help="Output model folder.")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML finetune config.")] = None,
    set_: SetOpt = None, print_config: PrintOpt = False, resume: ResumeOpt = "auto", nproc: NprocOpt = 1,
) -> None:
    """Fine-tune a model folder on one task; writes a model folder with the head and metrics.json."""
    from lmforge.config import commented_yaml, load
    from lmforge.train.finetune import finetune
    from lmforge.train.finetune_config import FinetuneConfig

    cfg = load(FinetuneConfig, config, set_, given(model=model, task=task, out=out,
                                                 data={"train": data, "dev": dev, "test": test}))
    if print_config:
        typer.echo(commented_yaml(cfg))
        return
    if nproc > 1:
        from lmforge.train.launch import launch

        raise typer.Exit(launch("finetune", cfg, nproc, resume))
    result = finetune(cfg, resume=None if resume == "none" else resume)
    for split, metrics in (("dev", result.dev), ("test", result.test or {})):
        for name, value in metrics.items():
            typer.echo(f"{split} {name}: {value:.4f}")
    typer.echo(f"model folder: {result.model_dir}")


@app.command("multitask")
@guarded
def multitask_cmd(config: ConfigArg = None, set_: SetOpt = None, print_config: PrintOpt = False,
                  resume: ResumeOpt = "auto", nproc: NprocOpt = 1) -> None:
    """Fine-tune one backbone on several tasks at once, balancing them with GradNorm (or equally)."""
    from lmforge.config import commented_yaml, load
    from lmforge.train.finetune_config import MultitaskConfig
    from lmforge.train.multitask import multitask

    cfg = load(MultitaskConfig, config, set_)
    if print_config:
        typer.echo(commented_yaml(cfg))
        return
    if nproc > 1:
        from lmforge.train.launch import launch

        raise typer.Exit(launch("multitask", cfg, nproc, resume))
    result = multitask(cfg, resume=None if resume == "none" else resume)
    for head, metrics in result.dev.items():
        for name, value in metrics.items():
            typer.echo(f"dev {head} {name}: {value:.4f}")
    typer.echo("final weights: " + ", ".join(f"{k} {v:.3f}" for k, v in result.weights.items()))
    typer.echo(f"model folder: {result.model_dir}")


@app.command("quantize")
@guarded
def quantize_cmd(
    model: Annotated[Path, typer.Argument(help="Source model folder (float weights).")],
    method: Annotated[str, typer.Option("--method", help="dynamic, weight-only, static or qat.")] = "dynamic",
    bits: Annotated[int, typer.Option("--bits", help="Weight bits: 8, or 4 with weight-only.")] = 8,
    embeddings: Annotated[bool, typer.Option("--embeddings/--no-embeddings",
                                             help="Also quantise the token embedding and LM head.")] = False,
    calib: Annotated[Path | None, typer.Option("--calib", help="Calibration data (default: the "
                                                               "model's training data).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Output model folder.")] = None,
    set_: SetOpt = None, print_config: PrintOpt = False,
) -> None:
    """Quantise a model folder to INT8 (or INT4 weight-only): a model folder that loads like any other."""
    from lmforge.compress.quantize import QuantizeConfig, quantize
    from lmforge.config import commented_yaml, load

    cfg = load(QuantizeConfig, None, set_, given(model=model, method=method, bits=bits, embeddings=embeddings,
                                                 calib=calib, out=out))
    if print_config:
        typer.echo(commented_yaml(cfg))
        return
    result = quantize(cfg)
    check, size = result.metrics["check"], result.metrics["size"]
    typer.echo(f"weights {size['float_bytes'] / 1e6:.2f} MB -> {size['quantized_bytes'] / 1e6:.2f} MB "
               f"({size['ratio']:.2f}x smaller)")
    typer.echo(f"against the float model on {check['tokens']} tokens: argmax agreement "
               f"{check['argmax_agreement']:.3f}, max |logit diff| {check['max_abs_diff']:.4f}")
    typer.echo(f"model folder: {result.model_dir}")


@app.command("distill")
@guarded
def distill_cmd(
    teacher: Annotated[Path, typer.Option("--teacher", help="Teacher model folder (a causal LM, or a "
                                                            "classify fine-tune).")],
    student: Annotated[str, typer.Option("--student", help="Preset name (tiny, small, ...) or a model "
                                                           "folder to start from.")],
    task: Annotated[str | None, typer.Option("--task", help="lm (default) or classify.")] = None,
    data: Annotated[Path | None, typer.Option("--data", help="lm: packed token folder (default: the "
                                                             "teacher's); classify: training file.")] = None,
    dev: Annotated[Path | None, typer.Option(help="classify: dev file (default: 10% of train).")] = None,
    out: Annotated[Path | None, typer.Option(help="Output model folder.")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML distill config.")] = None,
    set_: SetOpt = None, print_config: PrintOpt = False, resume: ResumeOpt = "auto",
) -> None:
    """Distil a teacher model folder into a smaller student (soft targets at temperature tau, hidden
    states, hard labels); writes the student's model folder with metrics.json."""
    from lmforge.compress.distill import distill
    from lmforge.compress.distill_config import DistillConfig
    from lmforge.config import commented_yaml, load

    cfg = load(DistillConfig, config, set_, given(teacher=teacher, student=student, task=task, data=data,
                                                  dev=dev, out=out))
    if print_config:
        typer.echo(commented_yaml(cfg))
        return
    result = distill(cfg, resume=None if resume == "none" else resume)
    for who, metrics in (("student", result.dev), ("teacher", result.teacher_dev)):
        typer.echo(f"{who} dev: " + ", ".join(f"{name} {value:.4g}" for name, value in metrics.items()))
    typer.echo(f"agreement with the teacher: {result.agreement['agreement']:.4f} (top-1), "
               f"KL {result.agreement['kl']:.4f}")
    typer.echo(f"model folder: {result.model_dir}")


@app.command("prune")
@guarded
def prune_cmd(
    model: Annotated[Path, typer.Argument(help="Source model folder.")],
    sparsity: Annotated[float, typer.Option(help="Share to remove, in (0, 1): of the block weights "
                                                 "(unstructured), of all heads, or of all MLP neurons.")],
    mode: Annotated[str, typer.Option(help="unstructured, heads or ffn.")],
    data: Annotated[Path | None, typer.Option(help="Training data: packed token folder (LM) or task file "
                                                   "(default: what the model's manifest records).")] = None,
    l1: Annotated[float | None, typer.Option(help="L1 penalty strength (0: none).")] = None,
    steps: Annotated[int | None, typer.Option(help="L1 fine-tuning steps before pruning (0: none).")] = None,
    head: Annotated[str | None, typer.Option(help="Head to prune for (default: the task head).")] = None,
    out: Annotated[Path | None, typer.Option(help="Output model folder.")] = None,
    set_: SetOpt = None, print_config: PrintOpt = False,
) -> None:
    """L1-regularised fine-tuning, then magnitude (unstructured) or head / MLP-neuron (structured) pruning;
    writes a model folder whose config says the new shapes, with metrics.json."""
    from lmforge.compress.prune import prune
    from lmforge.compress.prune_config import PruneConfig
    from lmforge.config import commented_yaml, load

    cfg = load(PruneConfig, None, set_, given(model=model, sparsity=sparsity, mode=mode, data=data, l1=l1,
                                              steps=steps, head=head, out=out))
    if print_config:
        typer.echo(commented_yaml(cfg))
        return
    m = prune(cfg).metrics
    before, tuned, after = (m["dev"][when][m["metric"]] for when in ("before", "after_l1", "after"))
    typer.echo(f"dev {m['metric']}: {before:.4f} before, {tuned:.4f} after L1 fine-tuning, {after:.4f} "
               "pruned")
    typer.echo(f"sparsity {m['sparsity']:.3f} (asked {m['sparsity_asked']})"
               + (f"; kept per layer: {m['kept']}" if "kept" in m else ""))
    size, params = m["size_bytes"], m["parameters"]
    typer.echo(f"parameters {params['before']:,} -> {params['after']:,}; model.safetensors "
               f"{size['before'] / 1e6:.2f} MB -> {size['after'] / 1e6:.2f} MB")
    typer.echo(f"model folder: {cfg.output}")


@app.command("compress-report")
@guarded
def compress_report_cmd(
    models: Annotated[list[Path], typer.Argument(help="The float model folder, then its variants.")],
    data: Annotated[Path | None, typer.Option("--data", help="Labelled file to score task heads on.")] = None,
    rounds: Annotated[int, typer.Option("--rounds", help="Interleaved timing rounds (median).")] = 7,
    out: Annotated[Path | None, typer.Option("--out", help="Report folder.")] = None,
) -> None:
    """Size, peak memory, latency, throughput and quality of every variant against the float model."""
    from lmforge.compress.report import ReportConfig, compress_report
    from lmforge.config import load

    cfg = load(ReportConfig, None, None, given(models=models, data=data, rounds=rounds, out=out))
    compress_report(cfg)
    typer.echo((cfg.output / "report.md").read_text(), nl=False)
    typer.echo(f"report: {cfg.output / 'report.html'}")


@app.command("evaluate")
@guarded
def evaluate_cmd(
    model: Annotated[Path, typer.Argument(help="Fine-tuned model folder.")],
    task: TaskOpt,
    data: Annotated[Path, typer.Option("--data", help="Labelled file to score.")],
    head: Annotated[str | None, typer.Option(help="Head name (default: the task's name).")] = None,
    device: DeviceOpt = "auto",
) -> None:
    """Score a model folder's task head on a data file, the way the head was trained; records the metrics."""
    from lmforge.train.finetune import evaluate

    for name, value in evaluate(model, task, data, head, device=device).items():
        typer.echo(f"{name}: {value:.4f}")


@app.command("serve")
@guarded
def serve_cmd(
    models: Annotated[list[Path] | None, typer.Argument(help="Model folders (export folders for the onnx "
                                                             "runtimes).")] = None,
    runtime: Annotated[str | None, typer.Option(help="eager, int8 (dynamic INT8 at load), onnx or "
                                                     "onnx-int8, for every model given here.")] = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000).")] = None,
    redis_url: Annotated[str | None, typer.Option("--redis-url", help="Result cache in Redis "
                                                  "(default: in-process).")] = None,
    api_keys: Annotated[Path | None, typer.Option("--api-keys", help="File of API keys, one per line "
                                                  "(also $LMFORGE_API_KEYS).")] = None,
    device: Annotated[str | None, typer.Option(help="auto (CUDA when present), cpu, cuda or cuda:N.")] = None,
    records: Annotated[str | None, typer.Option("--records", help="Request and feedback log: a database "
                                                "URL (sqlite:///records.db, postgresql+psycopg://...) "
                                                "or a SQLite file.")] = None,
    review: Annotated[bool, typer.Option("--review", help="Serve the review page (/review); needs "
                                                          "--records.")] = False,
    config: Annotated[Path | None, typer.Option("--config", help="YAML settings file (A/B experiments "
                                                "go here).")] = None,
    check: Annotated[bool, typer.Option("--check", help="Load and warm up every model, print what "
                                                        "would be served, and exit.")] = False,
    set_: SetOpt = None, print_config: PrintOpt = False,
) -> None:
    """Serve models over HTTP: OpenAI-compatible and KServe v2 routes, dynamic and continuous
    batching, result and prefix caches, Prometheus metrics on /metrics."""
    from lmforge.config import commented_yaml, load
    from lmforge.serve.settings import ServeSettings

    specs = [given(path=m, runtime=runtime) for m in models or []]
    cfg = load(ServeSettings, config, set_, given(models=specs or None, host=host, port=port,
                                                  redis_url=redis_url, api_keys_file=api_keys, device=device,
                                                  records_url=records, review=review or None))
    if print_config:
        typer.echo(commented_yaml(cfg))
        return
    # Before torch loads OpenMP: idle worker threads sleep instead of spinning, since this process
    # also runs the event loop and the batchers (spinning workers starved them: 10x slower, measured).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import uvicorn

    from lmforge.serve.app import create_app

    app_ = create_app(cfg)
    if check:
        import asyncio

        from lmforge.serve.registry import Registry

        async def load_all() -> None:
            registry = Registry(cfg, app_.state.metrics)
            for spec in cfg.models:
                slot = await registry.load(spec)
                typer.echo(json.dumps(slot.model.describe()))
            await registry.close()

        asyncio.run(load_all())
        return
    if not app_.state.keys.enabled:
        typer.secho("warning: no API keys configured; the server is open to anyone who can reach it",
                    fg=typer.colors.YELLOW, err=True)
    uvicorn.run(app_, host=cfg.host, port=cfg.port, log_level="info", timeout_graceful_shutdown=30)


@app.command("export")
@guarded
def export_cmd(
    model: Annotated[Path, typer.Argument(help="Model folder.")],
    format_: Annotated[str, typer.Option("--format", help="onnx, onnx-int8 (ONNX Runtime dynamic INT8), "
                                         "torchscript (deprecated by PyTorch; for libtorch servers), triton "
                                         "(ONNX Runtime, PyTorch and Python backends) or executorch (extra "
                                         "'executorch').")],
    out: Annotated[Path | None, typer.Option(help="Output folder; must not exist (default: "
                                                  "MODEL/../../exports/<model name>/<format>).")] = None,
    head: Annotated[str | None, typer.Option(help="Head to export (default: the only task head, else the "
                                                  "language model).")] = None,
) -> None:
    """Export a model folder for serving, checked against PyTorch on several shapes (figures in the
    folder's verification.json); the language model takes and returns its recurrence memory."""
    from lmforge.export.run import export_model

    for line in export_model(model, format_, out, head).lines():
        typer.echo(line)


@tokenizer_app.command("train")
@guarded
def tokenizer_train(config: ConfigArg = None, set_: SetOpt = None,
                    data: Annotated[list[Path] | None, typer.Option(help="Input file/folder.")] = None,
                    out: Annotated[Path | None, typer.Option(help="Tokenizer folder.")] = None) -> None:
    """Train a byte-level BPE tokenizer (HF tokenizers) on JSONL/.txt documents."""
    from lmforge.config import load
    from lmforge.tokenizer import TokenizerTrainConfig, run_train

    cfg = load(TokenizerTrainConfig, config, set_, given(data=data, out=out))
    typer.echo(f"tokenizer: {run_train(cfg)}")


@tokenizer_app.command("pack")
@guarded
def tokenizer_pack(config: ConfigArg = None, set_: SetOpt = None,
                   data: Annotated[list[Path] | None, typer.Option(help="Input file/folder.")] = None,
                   out: Annotated[Path | None, typer.Option(help="Token shard folder.")] = None) -> None:
    """Tokenize documents into uint16/uint32 shards plus a document index for training."""
    from lmforge.config import load
    from lmforge.tokenizer import PackConfig, run_pack

    cfg = load(PackConfig, config, set_, given(data=data, out=out))
    typer.echo(f"tokens: {run_pack(cfg)}")


@model_app.command("info")
@guarded
def model_info(preset: Annotated[str, typer.Argument(help="Preset name (tiny, small, base-768, ...).")],
               set_: SetOpt = None) -> None:
    """Parameters, memory and FLOPs of a preset (built on the meta device: costs nothing)."""
    from lmforge.config import load
    from lmforge.model import ModelConfig, describe
    from lmforge.model.info import format_description

    cfg = load(ModelConfig, None, set_, given(preset=preset))
    typer.echo(format_description(describe(cfg)))


@parallel_app.command("plan")
@guarded
def parallel_plan(config: ConfigArg = None, set_: SetOpt = None,
                  world: Annotated[int, typer.Option(min=1, help="Ranks to plan for.")] = 1) -> None:
    """Dry run: check the `parallel` layout for WORLD ranks and print each rank's parameter, gradient
    and optimizer bytes, without starting workers or allocating the model."""
    from lmforge.config import load
    from lmforge.parallel.plan import format_plan, memory_plan
    from lmforge.train import PretrainConfig
    from lmforge.train.launch import resolve_layout

    cfg = load(PretrainConfig, config, set_)
    settings, model = resolve_layout(cfg, world)
    typer.echo(format_plan(memory_plan(model, settings), settings))


def main() -> None:
    app(prog_name="lmforge")


if __name__ == "__main__":
    sys.exit(main())
