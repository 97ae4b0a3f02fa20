"""Run an exported model on the signature's sample inputs and measure how far it is from PyTorch.

A runner takes the inputs in signature order as numpy arrays and returns the outputs in signature
order, whatever runs it (ONNX Runtime, TorchScript, ExecuTorch); `compare` holds every runner to
the PyTorch module the export was made from. For a language model, `greedy` also decodes step by
step with the memory fed back, the way a server would generate with the exported graph.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmforge.export import ExportError
from lmforge.export.signature import Signature

Runner = Callable[[Sequence[np.ndarray]], list[np.ndarray]]

GREEDY_STEPS = 8


def torch_runner(module: torch.nn.Module) -> Runner:
    """A PyTorch module (eager or TorchScript) as a runner."""

    def run(arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        with torch.no_grad():
            out = module(*(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays))
        return [t.numpy() for t in (out if isinstance(out, tuple | list) else (out,))]

    return run


def ort_runner(path: Path) -> Runner:
    """An ONNX file run by ONNX Runtime on the CPU, its threads sleeping between runs: by default
    they spin after each run, and the compression report's interleaved timing then charged that
    spinning to whichever variant ran next (a 1-layer student measured 14x slower than its teacher)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return lambda arrays: session.run(None, dict(zip(names, arrays, strict=True)))


def torchscript_runner(path: Path) -> Runner:
    return torch_runner(torch.jit.load(str(path)))


def compare(
    sig: Signature, runner: Runner, cases: list[tuple[torch.Tensor, ...]] | None = None
) -> dict[str, Any]:
    """Max abs difference of every output over the sample inputs (default: the signature's), and how
    often logits' argmax agree.

    A shape that differs from PyTorch's is an ExportError: the export is broken, not imprecise.
    """
    cases = sig.cases if cases is None else cases
    reference = torch_runner(sig.module)
    diffs = dict.fromkeys((s.name for s in sig.outputs), 0.0)
    agree, total = 0, 0
    for case in cases:
        arrays = [t.numpy() for t in case]
        for spec, want, got in zip(sig.outputs, reference(arrays), runner(arrays), strict=True):
            if want.shape != got.shape:
                raise ExportError(
                    f"the exported {spec.name} has shape {list(got.shape)} where PyTorch gives "
                    f"{list(want.shape)} (inputs {[list(a.shape) for a in arrays]})"
                )
            diffs[spec.name] = max(diffs[spec.name], float(np.abs(want - got).max(initial=0.0)))
            if spec.name == "logits":
                agree += int((want.argmax(-1) == got.argmax(-1)).sum())
                total += want[..., 0].size
    figures: dict[str, Any] = {
        "shapes_checked": [[list(t.shape) for t in case] for case in cases],
        "max_abs_diff": diffs,
    }
    if total:
        figures["argmax_agreement"] = agree / total
    if sig.is_lm:
        prompt = sig.cases[0][0][0].tolist()
        want, got = greedy(reference, sig, prompt), greedy(runner, sig, prompt)
        figures["greedy_tokens_agreement"] = sum(a == b for a, b in zip(want, got, strict=True)) / len(want)
    return figures


def greedy(runner: Runner, sig: Signature, prompt: list[int], steps: int = GREEDY_STEPS) -> list[int]:
    """Greedy decoding through a language-model step runner: the prompt once, then one token per step
    with the returned memory fed back (what `lmforge.model.generate` does with temperature 0)."""
    mems = np.zeros((1, sig.settings["n_layers"], 0, sig.settings["d_model"]), dtype=np.float32)
    ids = np.asarray([prompt], dtype=np.int64)
    tokens = []
    for _ in range(steps):
        logits, mems = runner([ids, mems])
        tokens.append(int(logits[0, -1].argmax()))
        ids = np.asarray([[tokens[-1]]], dtype=np.int64)
    return tokens


def size_bytes(*paths: Path) -> int:
    """Bytes on disk of these files, with an ONNX file's external `.data` file when it has one."""
    extra = [p.with_name(p.name + ".data") for p in paths]
    return sum(p.stat().st_size for p in (*paths, *extra) if p.is_file())
