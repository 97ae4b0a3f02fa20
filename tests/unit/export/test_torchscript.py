"""TorchScript export: the traced LM step loads back and matches PyTorch at shapes it was not traced at."""

from __future__ import annotations

import json

import torch

from lmforge.artifacts import read_manifest
from lmforge.model.bundle import load_bundle


def test_traced_lm_step_loads_and_matches(export, lm_folder, tmp_path):
    out = export(lm_folder, "--format", "torchscript", "--out", tmp_path / "ts")
    figures = json.loads((out / "verification.json").read_text())
    assert read_manifest(out)["config"]["format"] == "torchscript"
    assert max(figures["max_abs_diff"].values()) < 1e-5
    assert figures["greedy_tokens_agreement"] == 1.0

    bundle = load_bundle(lm_folder)
    config, keep = bundle.config, bundle.config.context_len - 1
    traced = torch.jit.load(str(out / "model.pt"))
    generator = torch.Generator().manual_seed(1)
    for batch, length, memory in ((4, 3, 20), (1, 2, keep)):  # the second truncates the memory
        ids = torch.randint(config.vocab_size, (batch, length), generator=generator)
        mems = torch.randn(batch, config.n_layers, memory, config.d_model, generator=generator)
        with torch.no_grad():
            logits, new_mems = traced(ids, mems)
            want = bundle.model(ids, list(mems.unbind(1)), mem_len=keep)
        assert new_mems.shape == (batch, config.n_layers, min(memory + length, keep), config.d_model)
        assert (logits - want.logits).abs().max() < 1e-5
        assert (new_mems - torch.stack(want.mems, dim=1)).abs().max() < 1e-5
