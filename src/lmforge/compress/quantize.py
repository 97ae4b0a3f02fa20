"""`lmforge quantize`: a model folder -> an INT8 (or INT4 weight-only) model folder.

dynamic and weight-only need no data. static calibrates one input scale per block linear on a
sample (`--calib`, else the data the model was trained on, as its manifest records). qat first
fine-tunes the model's task head again with torchao's fake quantisation inserted through the
trainer's module-transform plug point, then stores the result as dynamic INT8. Every output is
a model folder whose config.json carries the `quantization` record the bundle loader rebuilds
it from, whose manifest names the parent, and whose metrics.json says how far its outputs moved
from the float model's on held-out inputs (XL memory carried across two segments).
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from lmforge.artifacts import ArtifactError, read_manifest
from lmforge.config import Config
from lmforge.data.documents import DataError, read_documents
from lmforge.data.tasks import read_conll, read_text_labels
from lmforge.model.bundle import ModelBundle, load_bundle
from lmforge.model.config import Quantization, QuantMethod
from lmforge.model.folder import save_model_folder
from lmforge.model.quantized import STATIC_LINEARS, quantize_backbone, save_quantized, torchao
from lmforge.tokenizer.loader import TokenStream


class QuantizeConfig(Config):
    """`lmforge quantize MODEL --method M`: what to quantise and how."""

    model: Path
    """Source model folder (float weights)."""
    method: QuantMethod = "dynamic"
    """dynamic | weight-only | static | qat (see `model.config.Quantization`)."""
    bits: Literal[8, 4] = 8
    """Weight bits: 8, or 4 for weight-only."""
    group_size: int = Field(32, gt=0)
    """4-bit weight-only: weights per scale."""
    embeddings: bool = False
    """Also quantise the token embedding and the LM head (the size effect is in metrics.json)."""
    calib: Path | None = None
    """Calibration/check data: TSV/CSV/JSONL rows or CoNLL for a task folder, text files or JSONL
    documents for an LM; default: the training data the model folder's manifest names."""
    samples: int = Field(128, gt=1)
    """Sequences read from the calibration data: the first half calibrates, the rest checks."""
    qat_steps: int = Field(100, gt=0)
    """qat: fine-tuning steps with fake quantisation."""
    qat_lr: float = Field(1e-4, gt=0)
    """qat: learning rate (the head is already trained, so a small one)."""
    out: Path | None = None
    """Output model folder (default: beside the source, named `<model>-int<bits>-<method>`)."""

    @model_validator(mode="after")
    def _check_bits(self) -> QuantizeConfig:
        self.recipe()  # the record's own rule (4-bit is weight-only), as a config error
        return self

    @property
    def output(self) -> Path:
        return self.out or self.model.parent / f"{self.model.name}-int{self.bits}-{self.method}"

    def recipe(self, act_scales: dict[str, float] | None = None) -> Quantization:
        return Quantization(method=self.method, bits=self.bits, group_size=self.group_size,
                            embeddings=self.embeddings, act_scales=act_scales or {})


@dataclass
class QuantizeResult:
    model_dir: Path
    metrics: dict[str, Any]


def quantize(cfg: QuantizeConfig) -> QuantizeResult:
    """Quantise `cfg.model` into `cfg.output`; one-line errors before anything is written."""
    out = cfg.output
    if out.exists():
        raise ArtifactError(f"{out}: already exists; remove it or choose another --out")
    source = load_bundle(cfg.model)
    if source.config.quantization is not None:
        raise ArtifactError(f"{cfg.model}: already quantised ({source.config.quantization.method}); "
                            "quantise its float parent instead")
    recipe = cfg.recipe()
    rows = calibration_rows(source, cfg)
    calibrate, check = rows[: len(rows) // 2], rows[len(rows) // 2:]
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as scratch:
        trained = qat_finetune(source, cfg, Path(scratch)) if cfg.method == "qat" else source
        if cfg.method == "static":
            recipe = cfg.recipe(input_scales(trained.model, calibrate))
        quantized = quantize_backbone(copy.deepcopy(trained.model).eval(), recipe)
        metrics = {"method": cfg.method, "bits": cfg.bits, "embeddings": cfg.embeddings,
                   "check": compare(trained, quantized, check),
                   "size": _sizes(source.folder / "model.safetensors", quantized, Path(scratch))}
        config = trained.config.model_copy(update={"quantization": recipe})
        save_model_folder(out, quantized, config, trained.folder, trained.spec,
                          config_used=cfg.model_dump(mode="json"), parents=[cfg.model], stage="quantize",
                          head_modules=trained.heads, files={"metrics.json": metrics})
    return QuantizeResult(out, metrics)


def _sizes(float_weights: Path, quantized: nn.Module, scratch: Path) -> dict[str, float]:
    """Backbone weights on disk, float against quantised (written once to measure the real file)."""
    probe = scratch / "probe.safetensors"
    save_quantized(quantized, probe)
    size = {"float_bytes": float_weights.stat().st_size, "quantized_bytes": probe.stat().st_size}
    probe.unlink()
    return {**size, "ratio": size["float_bytes"] / size["quantized_bytes"]}


# --- calibration data -------------------------------------------------------------------------


def calibration_rows(bundle: ModelBundle, cfg: QuantizeConfig) -> list[list[int]]:
    """`cfg.samples` token sequences (at most one segment each) to calibrate and check on."""
    seq_len = bundle.config.seq_len
    task = bundle.task_head()
    if cfg.calib is None:
        source = _training_data(bundle)
    else:
        if not cfg.calib.exists():
            raise DataError(f"{cfg.calib}: calibration file not found")
        source = cfg.calib
    if isinstance(source, TokenStream):
        rows = _stream_rows(source, seq_len, cfg.samples)
    else:
        texts = _texts(source, bundle, task)
        encoded = (bundle.tokenizer.encode(text).ids[:seq_len] for text in texts)
        rows = [ids for ids in encoded if ids][: cfg.samples]
    if len(rows) < 2:
        raise DataError(f"{cfg.calib or source}: calibration needs at least 2 non-empty texts, found "
                        f"{len(rows)}")
    return rows


def _training_data(bundle: ModelBundle) -> Path | TokenStream:
    """The data the model folder was trained on, from its manifest's resolved config."""
    data = read_manifest(bundle.folder).get("config", {}).get("data", {})
    if data.get("train"):
        return Path(data["train"])
    if data.get("tokens"):
        return TokenStream(data["tokens"], "val")
    raise DataError(f"{bundle.folder}: its manifest names no training data; pass --calib FILE")


def _stream_rows(stream: TokenStream, seq_len: int, n: int) -> list[list[int]]:
    starts = np.linspace(0, max(len(stream) - seq_len, 0), num=n, dtype=np.int64)
    return [stream.slice(int(s), min(int(s) + seq_len, len(stream))).tolist() for s in starts]


def _texts(path: Path, bundle: ModelBundle, task: str | None) -> Iterator[str]:
    usage = bundle.usage(task) if task else {}
    if task and bundle.spec[task]["task"] == "ner" and path.suffix in (".conll", ".txt", ".tsv"):
        return (" ".join(example.tokens) for example in read_conll(path))
    if path.suffix in (".tsv", ".csv") or (task and ".jsonl" in path.suffixes):
        columns = usage.get("text_column", "text"), usage.get("label_column", "label")
        return (example.text for example in read_text_labels(path, *columns))
    return (doc["text"] for doc in read_documents(path))


def input_scales(model: nn.Module, rows: list[list[int]]) -> dict[str, float]:
    """Per block linear that reads a [B, T, D] activation: absmax of its input over `rows` / 127.

    Symmetric min-max calibration (what torchao's MinMaxObserver does for a symmetric int8
    scheme); a percentile would clip outliers, but these models have none that dominate.
    """
    peaks: dict[str, float] = {}

    def record(name: str):
        def hook(module: nn.Module, args: tuple[Tensor, ...]) -> None:
            peaks[name] = max(peaks.get(name, 0.0), float(args[0].detach().abs().max()))
        return hook

    hooks = [module.register_forward_pre_hook(record(name)) for name, module in model.named_modules()
             if name.endswith(STATIC_LINEARS)]
    try:
        _run_segments(model, rows)
    finally:
        for hook in hooks:
            hook.remove()
    return {name: max(peak, 1e-8) / 127 for name, peak in peaks.items()}


@torch.no_grad()
def _run_segments(model: nn.Module, rows: list[list[int]]) -> list[Tensor]:
    """LM logits of `rows`, two rows at a time as consecutive segments (memory carried over)."""
    model.eval()
    outputs = []
    for first, second in zip(rows[::2], rows[1::2], strict=False):
        mems = None
        for ids in (first, second):
            out = model(torch.tensor([ids]), mems)
            mems = out.mems
            outputs.append(out.logits[0])
    return outputs


# --- checking against the float model ---------------------------------------------------------


@torch.no_grad()
def compare(reference: ModelBundle, quantized: nn.Module, rows: list[list[int]]) -> dict[str, float]:
    """How far the quantised LM logits are from the float model's on `rows` (memory carried):
    argmax agreement, max and mean absolute difference, and the float logits' spread for scale."""
    ref = torch.cat(_run_segments(reference.model, rows))
    got = torch.cat(_run_segments(quantized, rows))
    diff = (got - ref).abs()
    return {"argmax_agreement": float((got.argmax(-1) == ref.argmax(-1)).float().mean()),
            "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
            "logit_std": float(ref.std()), "tokens": ref.size(0)}


# --- quantisation-aware training --------------------------------------------------------------


def fake_quantize(model: nn.Module) -> nn.Module:
    """The trainer transform of `qat`: torchao fake quantisation on every block linear.

    Weights per channel, symmetric (as the INT8 kernels store them); activations per token,
    asymmetric, because torchao 0.18's fake quantiser has no symmetric per-token mode; the
    stored model then runs symmetric dynamic INT8, so training sees nearly the same rounding.
    """
    from torchao.quantization.qat import IntxFakeQuantizeConfig, QATConfig

    ao = torchao()
    config = QATConfig(activation_config=IntxFakeQuantizeConfig(torch.int8, "per_token", is_symmetric=False),
                       weight_config=IntxFakeQuantizeConfig(torch.int8, "per_channel", is_symmetric=True),
                       step="prepare")
    ao.quantize_(model, config, filter_fn=lambda m, fqn: isinstance(m, nn.Linear) and ".blocks." in f".{fqn}")
    return model


def qat_finetune(source: ModelBundle, cfg: QuantizeConfig, scratch: Path) -> ModelBundle:
    """Fine-tune the folder's task head again with fake quantisation, as it was first fine-tuned
    (its manifest's config), from its own weights; returns the trained float bundle."""
    from lmforge.train.finetune import finetune
    from lmforge.train.finetune_config import FinetuneConfig
    from lmforge.train.trainer import PlugPoints

    if source.task_head() is None:
        raise ArtifactError(f"{cfg.model}: qat fine-tunes a task head (classify, ner, embed) and this "
                            "folder has none; use --method dynamic or static for a language model")
    recorded = read_manifest(source.folder).get("config", {})
    if recorded.get("task") is None:
        raise ArtifactError(f"{cfg.model}: its manifest does not record a fine-tuning run to repeat with qat")
    settings = FinetuneConfig.model_validate({**recorded, "model": source.folder, "out": scratch / "model",
                                              "steps": cfg.qat_steps, "lr": cfg.qat_lr, "epochs": None,
                                              "eval_every": max(cfg.qat_steps // 4, 1)})
    finetune(settings, resume=None, plugs=PlugPoints(transforms=[fake_quantize]))
    return load_bundle(scratch / "model")
