"""ONNX export: the LM steps with its memory in ONNX Runtime as PyTorch generates; task heads match PyTorch;
the ONNX Runtime INT8 variant is smaller and still agrees."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from lmforge.artifacts import read_manifest
from lmforge.model import generate
from lmforge.model.bundle import load_bundle

BOUND = 1e-4
"""Largest |ONNX Runtime - PyTorch| accepted in fp32."""


@pytest.fixture(scope="module")
def lm_onnx(export, lm_folder):
    """The causal LM as ONNX, in the default folder."""
    return export(lm_folder, "--format", "onnx")


def test_lm_export_folder(lm_onnx, lm_folder):
    """Default place, manifest naming the model folder, the memory as an input and output with dynamic
    batch, sequence and memory axes, and verification figures within the bound on every shape."""
    assert lm_onnx == lm_folder.resolve().parent.parent / "exports" / lm_folder.name / "onnx"
    manifest = read_manifest(lm_onnx)
    assert manifest["stage"] == "export"
    assert manifest["parents"][0]["path"] == str(lm_folder.resolve())
    assert manifest["config"]["format"] == "onnx" and manifest["config"]["task"] == "causal_lm"
    assert {"model.onnx", "tokenizer.json", "heads.json", "verification.json"} <= set(manifest["files"])

    graph = onnx.load(str(lm_onnx / "model.onnx")).graph
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input}
    config = load_bundle(lm_folder).config
    assert set(dims) == {"input_ids", "mems"}
    assert all(isinstance(d, str) for d in dims["input_ids"])
    batch, layers, mem, width = dims["mems"]
    assert (
        isinstance(batch, str)
        and isinstance(mem, str)
        and (layers, width) == (config.n_layers, config.d_model)
    )
    assert [o.name for o in graph.output] == ["logits", "new_mems"]

    figures = json.loads((lm_onnx / "verification.json").read_text())
    assert figures == manifest["verification"]
    assert max(figures["max_abs_diff"].values()) < BOUND
    assert figures["argmax_agreement"] == 1.0 and figures["greedy_tokens_agreement"] == 1.0
    shapes = figures["shapes_checked"]
    assert len(shapes) >= 3
    assert any(ids[1] == 1 for ids, _ in shapes) and any(mems[2] == 0 for _, mems in shapes)
    assert len({ids[0] for ids, _ in shapes}) > 1


def test_ort_generation_feeds_memory_back(lm_onnx, lm_folder):
    """Greedy decoding in ONNX Runtime, one token per call with the returned memory fed back, past the
    window (so the memory is truncated), gives PyTorch's greedy tokens, step logits within the bound."""
    bundle = load_bundle(lm_folder)
    window, steps = bundle.config.context_len, 80
    prompt = bundle.tokenizer.encode("the film was a quiet story about a small town and its people").ids
    session = onnxruntime.InferenceSession(str(lm_onnx / "model.onnx"), providers=["CPUExecutionProvider"])
    mems = np.zeros((1, bundle.config.n_layers, 0, bundle.config.d_model), dtype=np.float32)
    ids, torch_mems, tokens, worst = np.asarray([prompt]), None, [], 0.0
    for _ in range(steps):
        logits, mems = session.run(["logits", "new_mems"], {"input_ids": ids, "mems": mems})
        with torch.no_grad():
            ref = bundle.model(torch.from_numpy(ids), torch_mems, mem_len=window - 1)
        torch_mems = ref.mems
        worst = max(worst, float(np.abs(ref.logits.numpy() - logits).max()))
        tokens.append(int(logits[0, -1].argmax()))
        ids = np.asarray([[tokens[-1]]])
    assert len(prompt) + steps > window and mems.shape[2] == window - 1
    assert worst < BOUND
    assert tokens == generate(bundle.model, prompt, steps, temperature=0)


def test_classifier_head_on_real_sentences(export, classifier_folder, tmp_path):
    """The only task head is chosen; inputs are ids + attention mask; padded SST-2 sentences give
    PyTorch's label logits (attending the way the head was trained) within the bound."""
    out = export(classifier_folder["model"], "--format", "onnx", "--out", tmp_path / "classifier")
    manifest = read_manifest(out)
    bundle = load_bundle(classifier_folder["model"])
    assert manifest["config"]["head"] == "classify"
    assert manifest["config"]["causal"] == bundle.usage("classify").get("causal", False)
    assert max(manifest["verification"]["max_abs_diff"].values()) < BOUND

    lines = classifier_folder["test"].read_text(encoding="utf-8").splitlines()[1:9]
    encoded = [bundle.tokenizer.encode(line.split("\t")[0]).ids[:32] for line in lines]
    longest = max(map(len, encoded))
    ids = np.asarray([row + [0] * (longest - len(row)) for row in encoded], dtype=np.int64)
    mask = np.asarray([[1] * len(row) + [0] * (longest - len(row)) for row in encoded], dtype=np.int64)
    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"input_ids": ids, "attention_mask": mask})
    with torch.no_grad():
        _, want = bundle.task_model("classify")(
            "classify", torch.from_numpy(ids), torch.from_numpy(mask).bool()
        )
    assert got.shape == (len(lines), len(bundle.head("classify")["labels"]))
    assert np.abs(got - want.numpy()).max() < BOUND


def test_int8_is_smaller_and_agrees(export, classifier_folder, tmp_path):
    """ONNX Runtime dynamic INT8: QInt8 weights in the graph, at least 2x smaller than fp32 on disk,
    the same predicted label on the sample batches, logits within a loose bound."""
    out = export(classifier_folder["model"], "--format", "onnx-int8", "--out", tmp_path / "int8")
    figures = json.loads((out / "verification.json").read_text())
    assert sorted(p.name for p in out.iterdir()) == [
        "heads.json",
        "manifest.json",
        "model.onnx",
        "tokenizer.json",
        "verification.json",
    ]
    assert figures["size_ratio"] > 2.0
    assert figures["size_bytes"] == (out / "model.onnx").stat().st_size
    assert figures["argmax_agreement"] >= 0.9
    assert figures["max_abs_diff"]["logits"] < 0.5
    graph = onnx.load(str(out / "model.onnx")).graph
    assert any(
        node.op_type in ("DynamicQuantizeLinear", "MatMulInteger", "DynamicQuantizeMatMul")
        for node in graph.node
    )
