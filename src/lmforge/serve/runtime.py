"""A model as the server runs it: task heads behind one array interface, whatever runs them.

    eager      a model folder through the bundle loader (a quantised folder runs quantised)
    int8       a float model folder, its block linears quantised to dynamic INT8 at load (torchao)
    onnx       an export folder (`lmforge export --format onnx`) in ONNX Runtime
    onnx-int8  an export folder (`--format onnx-int8`) in ONNX Runtime

Every head is `forward(input_ids, attention_mask) -> array`, the interface `export.signature`
gives every format, so the batcher and the routes never ask which runtime they have. Inputs are
tokenised by `model.inputs`, as fine-tuning did. A causal LM also serves a `score` head (each
text's log-likelihood, batched like the other heads). Generation needs the recurrence memory step
by step and runs on the eager backbone (`lm`), so an export folder serves task heads only.

The version is the first 12 hex digits of the sha256 of the folder's manifest, which pins the
sha256 of every file in it: result-cache keys carry it and the runtime (INT8 at load changes the
outputs), so a new model never answers from an old model's cache, and replicas of the same folder
share entries.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer

from lmforge.artifacts import MANIFEST, ArtifactError, load_tokenizer, read_manifest, sha256_file
from lmforge.device import resolve_device
from lmforge.export.signature import signature
from lmforge.model.bundle import load_bundle
from lmforge.model.config import Quantization
from lmforge.model.heads import LM_TASKS
from lmforge.model.quantized import quantize_backbone
from lmforge.model.xl import Transformer

RUNTIMES = ("eager", "int8", "onnx", "onnx-int8")
HeadForward = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass
class Head:
    name: str
    task: str
    """classify, ner, embed or score."""
    labels: list[str]
    max_len: int
    causal: bool
    forward: HeadForward
    """(input_ids [B, T] int64, attention_mask [B, T] int64) -> logits or unit embeddings."""


@dataclass
class ServedModel:
    name: str
    version: str
    runtime: str
    folder: Path
    tokenizer: Tokenizer
    tokenizer_digest: str
    heads: dict[str, Head]
    lm: Transformer | None
    """The eager backbone for generation and scoring; None for an export folder or a folder
    without an LM head."""
    device: torch.device

    def head(self, task: str, name: str | None = None) -> Head:
        """The head `name` (or the model's only `task` head); ArtifactError naming the heads it has."""
        found = [h for h in self.heads.values() if h.task == task and (name is None or h.name == name)]
        if len(found) != 1:
            known = ", ".join(f"{h.name} ({h.task})" for h in self.heads.values()) or "none"
            wanted = f"{task} head {name!r}" if name else f"exactly one {task} head"
            raise ArtifactError(f"model {self.name!r} has no {wanted} (heads: {known})")
        return found[0]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "runtime": self.runtime,
                "heads": {h.name: {"task": h.task, "labels": h.labels} for h in self.heads.values()},
                "generates": self.lm is not None}


def open_model(path: str | Path, runtime: str = "eager", device: str = "auto",
               name: str | None = None) -> ServedModel:
    """Load `path` for `runtime` (see the module docstring); one-line ArtifactError when the folder
    does not fit the runtime."""
    folder = Path(path)
    if runtime not in RUNTIMES:
        raise ArtifactError(f"runtime {runtime!r}: expected one of {', '.join(RUNTIMES)}")
    manifest = read_manifest(folder)
    exported = manifest.get("stage") == "export"
    if runtime.startswith("onnx") != exported:
        wanted = (f"an export folder (lmforge export {folder} --format {runtime})" if not exported
                  else "a model folder (export folders run with --runtime onnx or onnx-int8)")
        raise ArtifactError(f"{folder}: runtime {runtime} needs {wanted}")
    tokenizer = load_tokenizer(folder)
    common = {"name": name or folder.resolve().name, "version": sha256_file(folder / MANIFEST)[:12],
              "runtime": runtime, "folder": folder, "tokenizer": tokenizer,
              "tokenizer_digest": sha256_file(folder / "tokenizer.json")[:12]}
    if exported:
        return ServedModel(**common, heads=_onnx_heads(folder, manifest, runtime), lm=None,
                           device=torch.device("cpu"))
    target = resolve_device(device)
    bundle = load_bundle(folder, target)
    if runtime == "int8":
        if bundle.config.quantization is not None:
            raise ArtifactError(f"{folder}: already quantised ({bundle.config.quantization.method}); "
                                f"serve it with --runtime eager")
        quantize_backbone(bundle.model, Quantization(method="dynamic"))
    heads = {}
    for head in bundle.heads:
        sig = signature(bundle, head)
        heads[head] = Head(head, sig.task, sig.settings["labels"], sig.settings["max_len"],
                           sig.settings["causal"], _torch_forward(sig.module, target))
    lm = bundle.model if bundle.lm_task() == "causal_lm" else None
    if lm is not None:
        window = bundle.config.context_len
        heads["score"] = Head("score", "score", [], window, True, _score_forward(lm, target))
    return ServedModel(**common, heads=heads, lm=lm, device=target)


def _torch_forward(module: torch.nn.Module, device: torch.device) -> HeadForward:
    module.eval()

    @torch.inference_mode()
    def forward(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        ids = torch.from_numpy(input_ids).to(device)
        mask = torch.from_numpy(attention_mask).to(device)
        return module(ids, mask).float().cpu().numpy()

    return forward


def _score_forward(lm: Transformer, device: torch.device) -> HeadForward:
    """[B, 2]: each row's summed log-probability of its tokens after the first, and how many there
    are (so perplexity = exp(-sum / count)); pads count for nothing."""
    lm.eval()

    @torch.inference_mode()
    def forward(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        ids = torch.from_numpy(input_ids).to(device)
        mask = torch.from_numpy(attention_mask).to(device).bool()
        logprobs = lm(ids, padding_mask=mask, mem_len=0).logits[:, :-1].float().log_softmax(-1)
        picked = logprobs.gather(-1, ids[:, 1:, None])[..., 0] * mask[:, 1:]
        return torch.stack([picked.sum(-1), mask[:, 1:].sum(-1).float()], dim=-1).cpu().numpy()

    return forward


def _onnx_heads(folder: Path, manifest: dict[str, Any], runtime: str) -> dict[str, Head]:
    """The one head an ONNX export folder holds, run by ONNX Runtime."""
    import onnxruntime

    config = manifest.get("config", {})
    if config.get("format") != runtime:
        raise ArtifactError(f"{folder}: an export in format {config.get('format')!r}, "
                            f"but --runtime {runtime} needs format {runtime}")
    if config.get("task") in LM_TASKS:
        raise ArtifactError(f"{folder}: an exported language model; the server generates with the "
                            f"eager runtime (serve the model folder instead)")
    session = onnxruntime.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    output = config["outputs"][0]["name"]

    def forward(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        (result,) = session.run([output], {"input_ids": input_ids, "attention_mask": attention_mask})
        return result

    head = config["head"]
    return {head: Head(head, config["task"], config.get("labels", []), config["max_len"],
                       config.get("causal", False), forward)}
