"""An ExecuTorch program (.pte) lowered to XNNPACK: the edge format, behind the optional extra `executorch`.

ExecuTorch plans its memory ahead from torch.export's symbolic shapes, which shapes the two cases:

- The language-model step keeps dynamic batch (<= 64), segment (<= window) and memory (<= window - 1)
  axes, exported in size-oblivious mode as torch.onnx does, so that a batch or segment of 1 is not
  specialised away. That mode reads the model's `x[:, -mem_len:]` as if it never truncated, so the
  step keeps the whole memory inside the model and narrows it with an explicit `sym_max`; and the
  runtime assertions it records ("batch != 1") state the tracing assumption, not the graph (the
  verification runs batch and segment 1), so they are dropped before lowering.
- A task head is exported at one static shape, batch 1 and the head's training length, the way an
  edge device runs a classifier: pad to that length and say which tokens are real in the mask.
  (With dynamic axes, XNNPACK lowering refuses mean pooling's two-dynamic-axis reshape and the memory
  plan comes out too small at load time, in executorch 1.5.)
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.fx.experimental._config as fx_config
from torch import Tensor, nn

from lmforge.export import ExportError
from lmforge.export.signature import LanguageModelStep, Signature
from lmforge.export.verify import Runner

EXTRA = "executorch"
MAX_BATCH = 64


def require_executorch() -> None:
    """One line naming the extra when the executorch package is absent."""
    if importlib.util.find_spec("executorch") is None:
        raise ExportError(
            f"the executorch format needs the optional extra '{EXTRA}' "
            f"(pip install 'lmforge[{EXTRA}]'); the executorch package is not installed"
        )


class BoundedStep(nn.Module):
    """`LanguageModelStep` whose memory truncation has an explicit size (see the module docstring)."""

    def __init__(self, step: LanguageModelStep, longest: int):
        super().__init__()
        self.step = step
        self.longest = longest
        """More than any memory + segment the bounds allow: the model itself never truncates."""

    def forward(self, input_ids: Tensor, mems: Tensor) -> tuple[Tensor, Tensor]:
        step = self.step
        out = step.model(input_ids, list(mems.unbind(1)), causal=step.causal, mem_len=self.longest)
        full = torch.stack(out.mems, dim=1)
        start = torch.sym_max(full.size(2) - step.keep, 0)
        return out.logits, full.narrow(2, start, full.size(2) - start)


def executorch_cases(sig: Signature) -> list[tuple[Tensor, ...]]:
    """The sample inputs the program takes: the signature's for the LM; for a head, each row of its
    samples at the training length as a batch of 1 (one full, the others padded)."""
    if sig.is_lm:
        return sig.cases
    length = sig.settings["max_len"]
    return [
        (ids[i : i + 1], mask[i : i + 1])
        for ids, mask in sig.cases
        if ids.size(1) == length
        for i in range(ids.size(0))
    ]


def export_executorch(sig: Signature, path: Path) -> Path:
    """Lower `sig.module` through torch.export and the XNNPACK partitioner into the program at `path`."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import EdgeCompileConfig, to_edge_transform_and_lower

    example = executorch_cases(sig)[0]
    with torch.no_grad():
        program = _export_step(sig, example) if sig.is_lm else torch.export.export(sig.module, example)
    lowered = to_edge_transform_and_lower(
        program,
        partitioner=[XnnpackPartitioner()],
        compile_config=EdgeCompileConfig(_check_ir_validity=not sig.is_lm),
    )
    path.write_bytes(lowered.to_executorch().buffer)
    return path


def _export_step(sig: Signature, example: tuple[Tensor, ...]) -> torch.export.ExportedProgram:
    keep = sig.settings["mem_len"]
    bounds = {"batch": MAX_BATCH, "seq": keep + 1, "mem": keep}
    axes = {
        name: torch.export.Dim(name, min=0 if name == "mem" else 1, max=top) for name, top in bounds.items()
    }
    dynamic = {
        spec.name: {i: axes[d] for i, d in enumerate(spec.dims) if isinstance(d, str)} for spec in sig.inputs
    }
    with fx_config.patch(backed_size_oblivious=True):
        program = torch.export.export(
            BoundedStep(sig.module, 2 * keep + 2).eval(),
            example,
            dynamic_shapes=dynamic,
            prefer_deferred_runtime_asserts_over_guards=True,
        )
    graph = program.graph_module.graph
    for node in list(graph.nodes):
        if node.op == "call_function" and node.target is torch.ops.aten._assert_scalar.default:
            graph.erase_node(node)
    graph.eliminate_dead_code()
    program.graph_module.recompile()
    return program


def executorch_runner(path: Path) -> Runner:
    """A .pte program run by the ExecuTorch runtime (its portable and XNNPACK kernels)."""
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(path).load_method("forward")
    return lambda arrays: [t.numpy() for t in method.execute([_runtime_tensor(a) for a in arrays])]


def _runtime_tensor(array: np.ndarray) -> Tensor:
    """The array as a tensor the runtime accepts: for an empty one (the first step's memory, M = 0) the
    runtime wants the strides of a size-1 axis where torch and numpy give 0."""
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if tensor.numel():
        return tensor
    strides = np.cumprod([1, *(max(n, 1) for n in reversed(tensor.shape[1:]))])[::-1]
    return torch.empty_strided(tensor.shape, tuple(int(s) for s in strides), dtype=tensor.dtype)
