"""The ONNX graph of a signature (torch.onnx's current, torch.export-based exporter) and its INT8 variant.

Batch, sequence and memory lengths are dynamic axes. torch.onnx keeps the weights inside the one
.onnx file below 2 GB and writes them to `<name>.onnx.data` beside it above that (protobuf's limit);
ONNX Runtime and Triton read either. The exporter's per-node debug notes (stack traces naming this
machine's paths) are dropped: in a small model they are most of the file. INT8 is ONNX Runtime's
dynamic quantisation: weights stored as signed INT8, activations quantised per batch at run time,
nothing to calibrate.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch

from lmforge.export.signature import Signature


def export_onnx(sig: Signature, path: Path) -> Path:
    """Write `sig.module` as ONNX to `path`, with its named inputs, outputs and dynamic axes."""
    axes: dict[str, torch.export.Dim] = {}
    dynamic = {
        spec.name: {
            i: axes.setdefault(d, torch.export.Dim(d, min=0 if d == "mem" else 1))
            for i, d in enumerate(spec.dims)
            if isinstance(d, str)
        }
        for spec in sig.inputs
    }
    # The exporter warns about optional torchvision ops, deprecated pytree types and axis renames;
    # none is about this graph, and verify.py holds the result to PyTorch on several shapes.
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                sig.module,
                sig.cases[0],
                None,
                dynamo=True,
                verbose=False,
                input_names=[s.name for s in sig.inputs],
                output_names=[s.name for s in sig.outputs],
                dynamic_shapes=dynamic,
            )
    finally:
        exporter_log.setLevel(level)
    for node in program.model.graph.all_nodes():
        node.metadata_props.clear()  # the exporter's debug notes: source lines and paths of this machine
    program.save(str(path))
    return path


def quantize_int8(source: Path, path: Path) -> Path:
    """ONNX Runtime dynamic quantisation of the graph at `source` (QInt8 weights) into `path`."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # ORT logs a root-logger warning advising its pre-processing step (shape inference for CNNs);
    # the export's own verification says whether the quantised graph is right.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(source, path, weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    return path
