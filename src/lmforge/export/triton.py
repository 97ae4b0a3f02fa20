"""A Triton Inference Server model repository holding the model once per backend:

    <out>/<name>/config.pbtxt + <out>/<name>/1/model.onnx               platform onnxruntime_onnx
    <out>/<name>_pytorch/config.pbtxt + <out>/<name>_pytorch/1/model.pt  platform pytorch_libtorch
    <out>/<name>_python/config.pbtxt + <out>/<name>_python/1/model.py    backend python

The Python-backend model runs `<name>`'s ONNX file with ONNX Runtime (`triton_python_model.py`), for
Triton servers built without the onnxruntime and pytorch backends, such as the CPU server in
`nvidia-pytriton`'s wheel.

Both batch up to 64 requests with Triton's dynamic batcher (requests are grouped only when their
shapes match; the batch axis is implicit in `dims`, -1 marks the other dynamic axes). Triton's
libtorch backend cannot read TorchScript's argument names reliably across versions, so that variant
uses its positional naming convention `<name>__<index>` for inputs and outputs. For the language
model the memory is an ordinary input and output, batch first, so a client carries it between calls;
Triton's sequence batcher (server-side state) is the alternative the repository does not use.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from lmforge.export.onnx import export_onnx
from lmforge.export.signature import Signature, TensorSpec
from lmforge.export.torchscript import export_torchscript
from lmforge.export.verify import compare, ort_runner, size_bytes, torchscript_runner

MAX_BATCH_SIZE = 64
PREFERRED_BATCH_SIZES = (16, 32)
"""Batches Triton prefers to send when that many requests wait; otherwise the largest it can form."""
MAX_QUEUE_DELAY_US = 2000
"""How long the first request of a batch may wait for others: 2 ms, small next to a forward pass."""
TRITON_TYPES = {"int64": "TYPE_INT64", "float32": "TYPE_FP32"}
TORCH_SUFFIX = "_pytorch"
PYTHON_SUFFIX = "_python"
PYTHON_MODEL = Path(__file__).with_name("triton_python_model.py")


def model_name(folder: Path) -> str:
    """A Triton model name from a model folder's name (letters, digits, `_`, `-` and `.`)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", folder.name) or "model"


def config_pbtxt(
    name: str,
    runtime: str,
    inputs: list[tuple[str, TensorSpec]],
    outputs: list[tuple[str, TensorSpec]],
    parameters: dict[str, str] | None = None,
) -> str:
    """config.pbtxt of one model; `runtime` is a platform (`onnxruntime_onnx`) or `python` (a backend);
    `inputs`/`outputs` pair a tensor's name in this backend with its spec."""

    def tensors(pairs: list[tuple[str, TensorSpec]]) -> str:
        entries = [
            f'  {{\n    name: "{tensor}"\n    data_type: {TRITON_TYPES[spec.dtype]}\n'
            f"    dims: [ {', '.join(str(-1 if isinstance(d, str) else d) for d in spec.dims[1:])} ]\n  }}"
            for tensor, spec in pairs
        ]
        return ",\n".join(entries)

    field = "backend" if runtime == "python" else "platform"
    extra = "".join(
        f'parameters {{\n  key: "{key}"\n  value: {{ string_value: "{value}" }}\n}}\n'
        for key, value in (parameters or {}).items()
    )
    return (
        f'name: "{name}"\n{field}: "{runtime}"\nmax_batch_size: {MAX_BATCH_SIZE}\n'
        f"input [\n{tensors(inputs)}\n]\noutput [\n{tensors(outputs)}\n]\n"
        f"dynamic_batching {{\n  preferred_batch_size: [ {', '.join(map(str, PREFERRED_BATCH_SIZES))} ]\n"
        f"  max_queue_delay_microseconds: {MAX_QUEUE_DELAY_US}\n}}\n{extra}"
    )


def write_repository(sig: Signature, root: Path, name: str) -> dict[str, Any]:
    """Write the repository's models under `root`; returns the verification figures of each model file
    (the Python-backend model runs the ONNX file, so it has none of its own)."""
    suffixes = ("", TORCH_SUFFIX, PYTHON_SUFFIX)
    onnx_dir, torch_dir, python_dir = (root / f"{name}{suffix}" for suffix in suffixes)
    for folder in (onnx_dir, torch_dir, python_dir):
        (folder / "1").mkdir(parents=True)
    named = [(s.name, s) for s in sig.inputs], [(s.name, s) for s in sig.outputs]
    onnx_file = export_onnx(sig, onnx_dir / "1" / "model.onnx")
    (onnx_dir / "config.pbtxt").write_text(config_pbtxt(name, "onnxruntime_onnx", *named))
    torch_file = export_torchscript(sig, torch_dir / "1" / "model.pt")
    (torch_dir / "config.pbtxt").write_text(
        config_pbtxt(
            f"{name}{TORCH_SUFFIX}",
            "pytorch_libtorch",
            [(f"{s.name}__{i}", s) for i, s in enumerate(sig.inputs)],
            [(f"{s.name}__{i}", s) for i, s in enumerate(sig.outputs)],
        )
    )
    shutil.copyfile(PYTHON_MODEL, python_dir / "1" / "model.py")
    (python_dir / "config.pbtxt").write_text(
        config_pbtxt(f"{name}{PYTHON_SUFFIX}", "python", *named, parameters={"onnx_model": name})
    )
    return {
        "models": {
            name: {**compare(sig, ort_runner(onnx_file)), "size_bytes": size_bytes(onnx_file)},
            f"{name}{TORCH_SUFFIX}": {
                **compare(sig, torchscript_runner(torch_file)),
                "size_bytes": size_bytes(torch_file),
            },
        },
        "max_batch_size": MAX_BATCH_SIZE,
    }
