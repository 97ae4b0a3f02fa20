"""`lmforge export`: a model folder as one export folder, checked against PyTorch before it is kept.

The folder is written under a temporary name and renamed at the end (`artifacts.atomic_dir`), so a
failed export leaves nothing behind and an existing folder is never overwritten. Besides the model
files it holds the tokenizer and heads.json (label names) a server needs, `verification.json` (max
abs difference to PyTorch per output over several shapes, argmax agreement, greedy tokens agreement
for a language model, sizes) and a manifest naming the model folder, with the interface and figures.

Default output: `<MODEL>/../../exports/<model name>/<format>/`, which for a run's
`runs/<run>/models/<m>` is `runs/<run>/exports/<m>/<format>`, the run layout's place for exports.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmforge.artifacts import atomic_dir, atomic_write_json, write_manifest
from lmforge.export import ExportError
from lmforge.export.executorch import (
    executorch_cases,
    executorch_runner,
    export_executorch,
    require_executorch,
)
from lmforge.export.onnx import export_onnx, quantize_int8
from lmforge.export.signature import Signature, signature
from lmforge.export.torchscript import export_torchscript
from lmforge.export.triton import model_name, write_repository
from lmforge.export.verify import compare, ort_runner, size_bytes, torchscript_runner
from lmforge.model.bundle import load_bundle

Writer = Callable[[Signature, Path, Path], dict[str, Any]]
"""(signature, folder to fill, model folder) -> verification figures."""


def _onnx(sig: Signature, folder: Path, model: Path) -> dict[str, Any]:
    path = export_onnx(sig, folder / "model.onnx")
    return {**compare(sig, ort_runner(path)), "size_bytes": size_bytes(path)}


def _onnx_int8(sig: Signature, folder: Path, model: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as scratch:
        fp32 = export_onnx(sig, Path(scratch) / "model.onnx")
        int8 = quantize_int8(fp32, folder / "model.onnx")
        fp32_bytes = size_bytes(fp32)
    int8_bytes = size_bytes(int8)
    return {
        **compare(sig, ort_runner(int8)),
        "size_bytes": int8_bytes,
        "fp32_size_bytes": fp32_bytes,
        "size_ratio": fp32_bytes / int8_bytes,
    }


def _torchscript(sig: Signature, folder: Path, model: Path) -> dict[str, Any]:
    path = export_torchscript(sig, folder / "model.pt")
    return {**compare(sig, torchscript_runner(path)), "size_bytes": size_bytes(path)}


def _triton(sig: Signature, folder: Path, model: Path) -> dict[str, Any]:
    return write_repository(sig, folder, model_name(model))


def _executorch(sig: Signature, folder: Path, model: Path) -> dict[str, Any]:
    path = export_executorch(sig, folder / "model.pte")
    return {**compare(sig, executorch_runner(path), executorch_cases(sig)), "size_bytes": size_bytes(path)}


WRITERS: dict[str, Writer] = {
    "onnx": _onnx,
    "onnx-int8": _onnx_int8,
    "torchscript": _torchscript,
    "triton": _triton,
    "executorch": _executorch,
}
FORMATS = tuple(WRITERS)


@dataclass
class ExportResult:
    out: Path
    format: str
    head: str
    verification: dict[str, Any]

    def lines(self) -> list[str]:
        """What the command line prints: the figures of each exported model, then the folder."""
        models = self.verification.get("models", {self.format: self.verification})
        return [
            *(f"{name}: {_figures_line(figures)}" for name, figures in models.items()),
            f"export folder: {self.out}",
        ]


def _figures_line(figures: dict[str, Any]) -> str:
    diffs = ", ".join(f"{name} {value:.2e}" for name, value in figures["max_abs_diff"].items())
    parts = [f"max abs diff to PyTorch {diffs}"]
    parts += [
        f"{key.replace('_', ' ')} {figures[key]:.1%}"
        for key in ("argmax_agreement", "greedy_tokens_agreement")
        if key in figures
    ]
    parts.append(f"{figures['size_bytes'] / 1e6:.2f} MB")
    if "size_ratio" in figures:
        parts.append(f"{figures['size_ratio']:.2f}x smaller than fp32")
    return "; ".join(parts)


def default_out(model: Path, fmt: str) -> Path:
    """`<model>/../../exports/<model name>/<format>` (see the module docstring)."""
    model = model.resolve()
    return model.parent.parent / "exports" / model.name / fmt


def export_model(
    model: str | Path, fmt: str, out: str | Path | None = None, head: str | None = None
) -> ExportResult:
    """Export head `head` (default: the only task head, else the LM) of model folder `model` as `fmt`."""
    if fmt not in WRITERS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "executorch":
        require_executorch()
    bundle = load_bundle(model, "cpu")
    sig = signature(bundle, head)
    out = Path(out) if out is not None else default_out(bundle.folder, fmt)
    with atomic_dir(out) as tmp:
        figures = WRITERS[fmt](sig, tmp, bundle.folder)
        for name in ("tokenizer.json", "heads.json"):
            shutil.copyfile(bundle.folder / name, tmp / name)
        atomic_write_json(tmp / "verification.json", figures)
        write_manifest(
            tmp, "export", {"format": fmt, **sig.describe()}, [bundle.folder], {"verification": figures}
        )
    return ExportResult(out, fmt, sig.head, figures)
