"""`lmforge quantize`: each method's model folder, reloaded by the bundle loader, against the float model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from lmforge.cli import app
from lmforge.compress.quantize import QuantizeConfig, fake_quantize, quantize
from lmforge.model.bundle import load_bundle
from lmforge.train.finetune import evaluate

QUANTISED_WEIGHTS = {"Int8Tensor", "IntxUnpackedToInt8Tensor"}


def two_segment_logits(model: nn.Module, rows: list[list[int]]) -> torch.Tensor:
    """Logits of each pair of rows run as consecutive segments, the XL memory carried over."""
    outputs = []
    with torch.no_grad():
        for first, second in zip(rows[::2], rows[1::2], strict=True):
            out = model(torch.tensor([first]))
            outputs += [out.logits[0], model(torch.tensor([second]), out.mems).logits[0]]
    return torch.cat(outputs)


@pytest.fixture(scope="module")
def check_rows(lm_folder) -> list[list[int]]:
    torch.manual_seed(7)
    vocab = load_bundle(lm_folder).config.vocab_size
    return torch.randint(4, vocab, (8, 32)).tolist()


@pytest.mark.parametrize(("method", "bits", "embeddings", "agreement"), [
    ("dynamic", 8, False, 0.95), ("dynamic", 8, True, 0.9), ("weight-only", 8, False, 0.95),
    ("weight-only", 4, False, 0.8), ("static", 8, False, 0.9)])
def test_a_quantised_folder_reloads_quantised_and_keeps_the_float_models_predictions(
        lm_folder, check_rows, tmp_path, method, bits, embeddings, agreement):
    out = tmp_path / "q"
    cfg = QuantizeConfig(model=lm_folder, method=method, bits=bits, embeddings=embeddings, out=out)
    result = quantize(cfg)
    float_model, loaded = load_bundle(lm_folder).model, load_bundle(out).model

    # The loader rebuilt quantised modules (closeness alone would pass a loader that ignored them).
    assert type(loaded.blocks[0].attn.wq.weight).__name__ in QUANTISED_WEIGHTS
    assert type(loaded.blocks[1].attn.core.r_proj.weight).__name__ in QUANTISED_WEIGHTS
    assert (type(loaded.tok_emb.weight).__name__ in QUANTISED_WEIGHTS) == embeddings
    assert (loaded.lm_head.weight is loaded.tok_emb.weight) == (not embeddings)
    assert result.metrics["size"]["quantized_bytes"] < result.metrics["size"]["float_bytes"]
    assert (out / "model.safetensors").stat().st_size == result.metrics["size"]["quantized_bytes"]

    ref, got = two_segment_logits(float_model, check_rows), two_segment_logits(loaded, check_rows)
    assert not torch.equal(ref, got)
    assert (got.argmax(-1) == ref.argmax(-1)).float().mean() >= agreement
    assert (got - ref).abs().mean() < 0.1 * ref.std()


def test_embeddings_make_the_folder_smaller_still(lm_folder, tmp_path):
    sizes = {e: quantize(QuantizeConfig(model=lm_folder, embeddings=e, out=tmp_path / str(e))).metrics["size"]
             for e in (False, True)}
    assert sizes[True]["quantized_bytes"] < sizes[False]["quantized_bytes"]


def test_static_scales_cover_every_calibration_input_without_clipping(lm_folder, tmp_path):
    out = tmp_path / "static"
    quantize(QuantizeConfig(model=lm_folder, method="static", out=out, samples=8))
    scales = load_bundle(out).config.quantization.act_scales
    model = load_bundle(lm_folder).model
    assert sorted(scales) == sorted(f"blocks.{i}.{name}" for i in range(2) for name in
                                    ("attn.wq", "attn.wk", "attn.wv", "attn.wo", "mlp.w_in", "mlp.w_out"))
    # The calibration half of the rows again (the first 4 of 8 packed validation segments), by hand.
    from lmforge.compress.quantize import _stream_rows, _training_data

    rows = _stream_rows(_training_data(load_bundle(lm_folder)), model.config.seq_len, 8)[:4]
    peak: dict[str, float] = {}

    def record(module, args, name):
        peak[name] = max(peak.get(name, 0.0), float(args[0].abs().max()))

    hooks = [m.register_forward_pre_hook(lambda m, a, n=n: record(m, a, n))
             for n, m in model.named_modules() if n in scales]
    two_segment_logits(model, rows)
    for hook in hooks:
        hook.remove()
    for name, scale in scales.items():
        assert peak[name] / scale == pytest.approx(127, rel=1e-5)


def test_fake_quantisation_wraps_only_block_linears_and_lets_gradients_through(lm_folder):
    model = fake_quantize(load_bundle(lm_folder).model.train())
    kinds = {name: type(m).__name__ for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    assert {k for n, k in kinds.items() if n.startswith("blocks.")} == {"FakeQuantizedLinear"}
    assert kinds["lm_head"] == "Linear"
    model(torch.randint(4, 100, (2, 16))).logits.sum().backward()
    assert model.blocks[0].attn.wq.weight.grad.abs().sum() > 0


def test_qat_fine_tunes_the_head_and_stays_as_accurate_as_its_float_parent(classifier_folder, tmp_path):
    out = tmp_path / "qat"
    quantize(QuantizeConfig(model=classifier_folder["model"], method="qat", qat_steps=20, out=out))
    bundle = load_bundle(out)
    assert bundle.config.quantization.method == "qat"
    assert type(bundle.model.blocks[0].mlp.w_in.weight).__name__ in QUANTISED_WEIGHTS
    test = classifier_folder["test"]
    before = evaluate(classifier_folder["model"], "classify", test)["accuracy"]
    after = evaluate(out, "classify", test)["accuracy"]
    assert after >= before - 0.05


def test_generate_and_evaluate_take_a_quantised_folder(lm_folder, classifier_folder, tmp_path):
    runner = CliRunner()
    lm = tmp_path / "lm-int8"
    result = runner.invoke(app, ["quantize", str(lm_folder), "--out", str(lm)])
    assert result.exit_code == 0, result.output
    assert "smaller" in result.output and "argmax agreement" in result.output
    result = runner.invoke(app, ["generate", str(lm), "--prompt", "the", "--max-tokens", "5"])
    assert result.exit_code == 0, result.output
    clf = tmp_path / "clf-int8"
    assert runner.invoke(app, ["quantize", str(classifier_folder["model"]), "--method", "static",
                               "--out", str(clf)]).exit_code == 0
    float_accuracy = evaluate(classifier_folder["model"], "classify", classifier_folder["test"])["accuracy"]
    assert evaluate(clf, "classify", classifier_folder["test"])["accuracy"] == pytest.approx(float_accuracy,
                                                                                           abs=0.05)


@pytest.mark.parametrize("case", ["already quantised", "missing calib", "empty calib", "out exists",
                                  "4-bit dynamic", "qat without a head"])
def test_bad_input_is_one_line_and_writes_nothing(lm_folder, tmp_path, case):
    runner = CliRunner()
    args = ["quantize", str(lm_folder), "--out", str(tmp_path / "out")]
    if case == "already quantised":
        quantize(QuantizeConfig(model=lm_folder, out=tmp_path / "q"))
        args = ["quantize", str(tmp_path / "q"), "--out", str(tmp_path / "out")]
    elif case == "missing calib":
        args += ["--method", "static", "--calib", str(tmp_path / "nope.txt")]
    elif case == "empty calib":
        (tmp_path / "empty.txt").write_text("")
        args += ["--method", "static", "--calib", str(tmp_path / "empty.txt")]
    elif case == "out exists":
        (tmp_path / "out").mkdir()
    elif case == "4-bit dynamic":
        args += ["--bits", "4"]
    else:
        args += ["--method", "qat"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert "Traceback" not in result.output
    leftovers = [p.name for p in Path(tmp_path).iterdir() if p.name.startswith(".")]
    assert not leftovers
    assert case == "out exists" or not (tmp_path / "out").exists()
