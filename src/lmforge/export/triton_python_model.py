"""Triton Python-backend model (`<repo>/<name>_python/1/model.py`): the repository's ONNX model run
by ONNX Runtime inside Triton's Python backend.

Why it exists: a Triton install without the onnxruntime and pytorch backends (the CPU server inside
`nvidia-pytriton`'s wheel carries only the Python backend) can still serve the export. lmforge never
imports this file; `export/triton.py` copies it into the repository, and Triton runs it with
`triton_python_backend_utils` on its path. The ONNX file is not copied: config.pbtxt's parameter
`onnx_model` names the sibling model whose `<version>/model.onnx` this one runs.
"""

import json
from pathlib import Path

import numpy as np
import onnxruntime
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        onnx_model = config["parameters"]["onnx_model"]["string_value"]
        path = Path(args["model_repository"]).parent / onnx_model / args["model_version"] / "model.onnx"
        self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.inputs = [tensor["name"] for tensor in config["input"]]
        self.outputs = [tensor["name"] for tensor in config["output"]]

    def execute(self, requests: list) -> list:
        """One ONNX Runtime call for the whole dynamic batch: Triton groups only requests whose
        non-batch dimensions match, so their inputs concatenate along the batch axis."""
        feeds = [
            {name: pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in self.inputs}
            for request in requests
        ]
        sizes = [len(feed[self.inputs[0]]) for feed in feeds]
        batch = {name: np.concatenate([feed[name] for feed in feeds]) for name in self.inputs}
        results = dict(zip(self.outputs, self.session.run(self.outputs, batch), strict=True))
        bounds = np.cumsum([0, *sizes])
        return [
            pb_utils.InferenceResponse(
                [pb_utils.Tensor(name, result[lo:hi]) for name, result in results.items()]
            )
            for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)
        ]
