"""TorchScript by tracing: the format Triton's PyTorch (libtorch) backend loads.

TorchScript is deprecated in PyTorch 2.x (`torch.jit.trace`, `torch.jit.save` and `torch.jit.load`
warn, pointing at torch.export); it stays because libtorch servers such as Triton's `pytorch_libtorch`
backend still load nothing else. Tracing rather than scripting: the model's Python-side choices
(memory or not, causal or not) are fixed per export, and the size arithmetic on tensor shapes is
recorded, so one trace serves every batch, sequence and memory length (`verify` checks other shapes
than the traced one).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from lmforge.export.signature import Signature


def export_torchscript(sig: Signature, path: Path) -> Path:
    """Trace `sig.module` on its example, check the trace on the other sample shapes, save it to `path`."""
    # Tracing warns that shape checks become constants and that TorchScript is deprecated; the
    # trace is checked on the other shapes here and held to PyTorch by verify.py.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(sig.module, sig.cases[0], check_inputs=sig.cases[1:])
    traced.save(str(path))
    return path
