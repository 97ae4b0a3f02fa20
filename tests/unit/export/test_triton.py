"""Triton repository: every config.pbtxt parses into Triton's ModelConfig protobuf (from tritonclient) and
describes the model files beside it, which load and match PyTorch. A real Triton server serves it in
tests/integration/test_triton_server.py."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime
import pytest
import torch
from google.protobuf import text_format

from lmforge.export.signature import signature
from lmforge.export.triton import MAX_BATCH_SIZE, config_pbtxt
from lmforge.model.bundle import load_bundle

model_config_pb2 = pytest.importorskip(
    "tritonclient.grpc.model_config_pb2", reason="needs tritonclient[grpc] (the dev extra)"
)


def parse(text: str):
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def tensors(entries) -> dict[str, tuple[str, list[int]]]:
    return {t.name: (model_config_pb2.DataType.Name(t.data_type), list(t.dims)) for t in entries}


def test_repository_for_every_backend(export, classifier_folder, tmp_path):
    model = classifier_folder["model"]
    out = export(model, "--format", "triton", "--out", tmp_path / "repo")
    name = model.name
    n_labels = len(load_bundle(model).head("classify")["labels"])
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [name, f"{name}_python", f"{name}_pytorch"]

    onnx_cfg = parse((out / name / "config.pbtxt").read_text())
    torch_cfg = parse((out / f"{name}_pytorch" / "config.pbtxt").read_text())
    python_cfg = parse((out / f"{name}_python" / "config.pbtxt").read_text())
    assert (onnx_cfg.name, onnx_cfg.platform) == (name, "onnxruntime_onnx")
    assert (torch_cfg.name, torch_cfg.platform) == (f"{name}_pytorch", "pytorch_libtorch")
    assert (python_cfg.name, python_cfg.backend) == (f"{name}_python", "python")
    assert python_cfg.parameters["onnx_model"].string_value == name
    assert (out / f"{name}_python" / "1" / "model.py").is_file()
    assert tensors(python_cfg.input) == tensors(onnx_cfg.input)
    assert tensors(python_cfg.output) == tensors(onnx_cfg.output)
    for cfg in (onnx_cfg, torch_cfg, python_cfg):
        assert cfg.max_batch_size == MAX_BATCH_SIZE == 64
        assert cfg.HasField("dynamic_batching")
        assert list(cfg.dynamic_batching.preferred_batch_size) == [16, 32]
        assert cfg.dynamic_batching.max_queue_delay_microseconds > 0
    assert tensors(onnx_cfg.input) == {
        "input_ids": ("TYPE_INT64", [-1]),
        "attention_mask": ("TYPE_INT64", [-1]),
    }
    assert tensors(onnx_cfg.output) == {"logits": ("TYPE_FP32", [n_labels])}
    assert tensors(torch_cfg.input) == {
        "input_ids__0": ("TYPE_INT64", [-1]),
        "attention_mask__1": ("TYPE_INT64", [-1]),
    }
    assert tensors(torch_cfg.output) == {"logits__0": ("TYPE_FP32", [n_labels])}

    figures = json.loads((out / "verification.json").read_text())["models"]
    assert max(figures[name]["max_abs_diff"].values()) < 1e-4
    assert max(figures[f"{name}_pytorch"]["max_abs_diff"].values()) < 1e-4
    ids = np.array([[5, 6, 7, 8], [9, 10, 0, 0]], dtype=np.int64)
    mask = (ids > 0).astype(np.int64)
    session = onnxruntime.InferenceSession(
        str(out / name / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    (from_onnx,) = session.run(["logits"], {"input_ids": ids, "attention_mask": mask})
    with torch.no_grad():
        from_torch = torch.jit.load(str(out / f"{name}_pytorch" / "1" / "model.pt"))(
            torch.from_numpy(ids), torch.from_numpy(mask)
        )
    assert np.abs(from_onnx - from_torch.numpy()).max() < 1e-4


def test_lm_config_carries_memory_batch_first(lm_folder):
    """The LM's memory is an input and an output with the batch axis first, so Triton can batch it."""
    bundle = load_bundle(lm_folder)
    sig = signature(bundle)
    cfg = parse(
        config_pbtxt(
            "lm", "onnxruntime_onnx", [(s.name, s) for s in sig.inputs], [(s.name, s) for s in sig.outputs]
        )
    )
    layers, width, vocab = bundle.config.n_layers, bundle.config.d_model, bundle.config.vocab_size
    assert tensors(cfg.input) == {
        "input_ids": ("TYPE_INT64", [-1]),
        "mems": ("TYPE_FP32", [layers, -1, width]),
    }
    assert tensors(cfg.output) == {
        "logits": ("TYPE_FP32", [-1, vocab]),
        "new_mems": ("TYPE_FP32", [layers, -1, width]),
    }
