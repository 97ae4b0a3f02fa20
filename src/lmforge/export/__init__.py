"""Export: a model folder as ONNX (+ ONNX Runtime INT8), TorchScript, a Triton repository or ExecuTorch.

Export reads models only through the bundle loader and never imports training code. `run.export_model`
is the entry point; this module stays free of torch so that importing the error type costs nothing.
"""

from lmforge.errors import LmforgeError


class ExportError(LmforgeError):
    """An export that cannot be made as asked: unknown format, missing optional extra, no such head."""
