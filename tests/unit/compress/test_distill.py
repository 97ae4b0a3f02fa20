"""Distillation (`lmforge distill`): the loss against a hand-written reference, the projections, and
the whole run for the LM and the classifier.

- the loss: tau^2 * KL(teacher || student) written out with softmaxes, the hidden MSE over block
  outputs read by running the blocks by hand (no hooks), the hard cross-entropy, weighted;
- a width mismatch goes through a learned projection, which gets gradients and is not saved;
- at a tiny budget the distilled student ends closer to the teacher (KL on held-out rows) than the
  same student trained on the labels alone, from the same initial weights;
- the output folder loads with `load_bundle`, `lmforge evaluate` scores it, its manifest and
  config say where it came from and how; a student folder is the init and a parent;
- a resumed LM distillation (two micro-batches, so two teacher memories in the checkpoint) ends
  with the weights of an uninterrupted one;
- bad input is one line and status 1.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from typer.testing import CliRunner, Result

from lmforge.cli import app
from lmforge.compress.distill import (
    DistilledLM,
    FrozenTeacher,
    Student,
    distill,
    resolve_map,
    soft_kl,
    uniform_map,
)
from lmforge.compress.distill_config import DistillConfig, DistillLoss
from lmforge.config import ConfigError
from lmforge.model import ModelConfig, Transformer
from lmforge.model.bundle import load_bundle
from lmforge.model.folder import save_model_folder
from lmforge.model.xl import attention_mask
from lmforge.train.objectives import LanguageModelling, Objective

VOCAB, BATCH, T = 40, 3, 8
STUDENT = {"d_model": 24, "n_heads": 2, "d_ff": 48, "n_layers": 1}
"""A student half as deep and narrower than the 32-wide, 2-block test teachers."""


def net(width: int, layers: int, seed: int) -> Transformer:
    torch.manual_seed(seed)
    config = ModelConfig(
        vocab_size=VOCAB,
        d_model=width,
        n_layers=layers,
        n_heads=2,
        d_ff=2 * width,
        seq_len=T,
        mem_len=0,
        dropout=0.0,
    )
    return Transformer(config).double()


def block_states(model: Transformer, idx: torch.Tensor) -> list[torch.Tensor]:
    """Every block's output, by running the blocks one by one (the test's own reading, not hooks)."""
    x, mask = model.embed(idx, 0), attention_mask(idx.shape[1], 0, True, None, idx.device)
    states = []
    for block in model.blocks:
        x = block(x, None, mask, True)
        states.append(x)
    return states


def reference_loss(
    student: Transformer,
    teacher: Transformer,
    projections: dict[int, torch.nn.Module],
    layer_map: dict[int, int],
    s: DistillLoss,
    idx: torch.Tensor,
    labels: torch.Tensor,
) -> torch.Tensor:
    """sum over tokens of w_kd tau^2 KL(p_t || p_s) + w_hidden mean_pairs MSE + w_hard CE, written out."""
    tau = s.temperature
    logits, target = student(idx).logits, teacher(idx).logits
    p = F.softmax(target / tau, -1)
    kl = tau**2 * (p * (p.log() - F.log_softmax(logits / tau, -1))).sum(-1)
    ce = -F.log_softmax(logits, -1).gather(-1, labels[..., None])[..., 0]
    mine, theirs = block_states(student, idx), block_states(teacher, idx)
    mse = sum(((projections[a](mine[a]) - theirs[b]) ** 2).mean(-1) for a, b in layer_map.items()) / len(
        layer_map
    )
    return (s.w_kd * kl + s.w_hidden * mse + s.w_hard * ce).sum()


@pytest.mark.parametrize(("tau", "width", "layers"), [(1.0, 16, 2), (2.0, 8, 1), (4.0, 8, 2)])
def test_the_loss_is_the_weighted_sum_of_tau_squared_kl_hidden_mse_and_cross_entropy(tau, width, layers):
    teacher, student = net(16, 4, seed=1), net(width, layers, seed=2)
    settings = DistillLoss(temperature=tau, w_kd=0.7, w_hidden=0.3, w_hard=0.2)
    layer_map = uniform_map(layers, 4)
    wrapped = Student(student, layer_map, teacher_width=16).double()
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, VOCAB, (BATCH, T + 1), generator=generator)
    idx, labels = tokens[:, :-1], tokens[:, 1:]
    plug = FrozenTeacher(teacher, teacher, layer_map.values(), head=None)
    objective = DistilledLM(LanguageModelling(Objective("causal"), None), wrapped, settings)

    got, _ = objective.loss(wrapped, (idx, labels), None, plug((idx, labels)))
    projections = {s: wrapped.projections[str(s)] for s in layer_map}
    want = reference_loss(student, teacher, projections, layer_map, settings, idx, labels)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)

    got.backward()
    for s in layer_map:
        projection = wrapped.projections[str(s)]
        if width == 16:
            assert isinstance(projection, torch.nn.Identity)
        else:  # the width mismatch goes through a learned projection that trains with the student
            assert isinstance(projection, torch.nn.Linear) and projection.weight.shape == (16, width)
            assert projection.weight.grad is not None and projection.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


def test_soft_targets_are_kl_of_the_teacher_to_the_student_times_tau_squared():
    generator = torch.Generator().manual_seed(3)
    student, teacher = torch.randn(5, 7, generator=generator), 3 * torch.randn(5, 7, generator=generator)
    for tau in (1.0, 2.0, 8.0):
        p, q = F.softmax(teacher / tau, -1), F.softmax(student / tau, -1)
        torch.testing.assert_close(soft_kl(student, teacher, tau), tau**2 * (p * (p / q).log()).sum(-1))


def test_layer_mapping_is_uniform_by_default_and_checked_when_given():
    assert uniform_map(2, 4) == {0: 1, 1: 3}
    assert uniform_map(3, 12) == {0: 3, 1: 7, 2: 11}
    assert uniform_map(2, 2) == {0: 0, 1: 1}
    assert resolve_map({1: 0}, 2, 4) == {1: 0}
    with pytest.raises(ConfigError, match="layer_map"):
        resolve_map({2: 0}, 2, 4)


def run_cli(*args: str) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args])


def one_line_error(result: Result) -> str:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def teacher_lm(pretrain_config, tmp_path_factory):
    """`lm_folder`'s model trained for 200 steps instead of 30: at 30 its next-token distributions are
    close to uniform, and any student is "close" to them."""
    from lmforge.train import pretrain

    cfg = pretrain_config(tmp_path_factory.mktemp("teacher"), steps=200, eval_every=200, checkpoint_every=200)
    cfg.model = cfg.model.model_copy(update={"seq_len": 32, "mem_len": 32})
    return pretrain(cfg, resume=None).model_dir


@pytest.fixture(scope="module")
def lm_runs(teacher_lm, tmp_path_factory):
    """The LM teacher distilled into a 1-block, 24-wide student, and that student trained on the
    next tokens alone: same initial weights, data and budget."""
    root = tmp_path_factory.mktemp("distill-lm")
    common = {
        "teacher": teacher_lm,
        "student": "tiny",
        "student_config": STUDENT,
        "steps": 80,
        "batch_size": 4,
        "lr": 3e-3,
        "eval_every": 80,
        "eval_segments": 4,
    }
    return {
        "distilled": distill(DistillConfig(**common, out=root / "distilled")),
        "plain": distill(DistillConfig(**common, out=root / "plain", w_kd=0, w_hidden=0, w_hard=1)),
    }


def test_a_distilled_lm_student_is_closer_to_its_teacher_than_one_trained_without_it(lm_runs):
    distilled, plain = lm_runs["distilled"], lm_runs["plain"]
    assert distilled.agreement["kl"] < plain.agreement["kl"]
    assert distilled.teacher_dev == plain.teacher_dev


def test_the_lm_student_folder_loads_and_says_how_it_was_made(lm_runs, teacher_lm):
    out = lm_runs["distilled"].model_dir
    bundle = load_bundle(out)
    assert (
        bundle.config.d_model == 24 and bundle.config.vocab_size == load_bundle(teacher_lm).config.vocab_size
    )
    with safe_open(out / "model.safetensors", "pt") as f:
        assert not any("projection" in key for key in f.keys())  # noqa: SIM118 (safe_open has no __iter__)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "distill"
    assert manifest["parents"][0]["path"] == str(teacher_lm.resolve())
    used = manifest["config"]
    assert (used["temperature"], used["w_kd"], used["w_hidden"], used["w_hard"]) == (2.0, 0.5, 1.0, 0.5)
    assert used["layer_map"] == {"0": 1}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dev"]["loss"] > 0 and metrics["teacher"]["dev"]["loss"] > 0
    assert 0 <= metrics["agreement"]["agreement"] <= 1


def test_a_student_folder_is_where_the_student_starts_and_a_parent(teacher_lm, lm_folder, tmp_path):
    cfg = DistillConfig(
        teacher=teacher_lm,
        student=str(lm_folder),
        steps=2,
        batch_size=4,
        eval_segments=1,
        out=tmp_path / "student",
    )
    distill(cfg, resume=None)
    parents = [p["path"] for p in json.loads((cfg.out / "manifest.json").read_text())["parents"]]
    assert parents[:2] == [str(teacher_lm.resolve()), str(lm_folder.resolve())]
    assert load_bundle(cfg.out).config == load_bundle(lm_folder).config


def test_a_resumed_lm_distillation_ends_with_the_weights_of_an_uninterrupted_one(lm_folder, tmp_path):
    """Two micro-batches per step, so two teacher memories; they come back from the checkpoint."""

    def run(name: str, resume: str | None) -> dict[str, torch.Tensor]:
        cfg = DistillConfig(
            teacher=lm_folder,
            student="tiny",
            student_config=STUDENT,
            steps=6,
            batch_size=4,
            micro_batch_size=2,
            eval_every=6,
            checkpoint_every=3,
            eval_segments=1,
            out=tmp_path / "models" / name,
        )
        distill(cfg, resume=resume)
        return load_bundle(cfg.out).model.state_dict()

    whole = run("whole", None)
    shutil.copytree(tmp_path / "checkpoints" / "whole", tmp_path / "checkpoints" / "cut")
    for finished in ("step_000006", "best"):  # as if the run had been stopped after step 3
        shutil.rmtree(tmp_path / "checkpoints" / "cut" / finished)
    resumed = run("cut", "auto")
    for name, tensor in whole.items():
        assert torch.equal(tensor, resumed[name]), name


@pytest.fixture(scope="module")
def classify_runs(classifier_folder, tmp_path_factory):
    """The SST-2 classifier distilled through the command line, and the same student on the labels alone."""
    root = tmp_path_factory.mktemp("distill-classify")
    settings = [f"student_config.{k}={v}" for k, v in STUDENT.items()]
    settings += ["steps=40", "batch_size=16", "lr=3e-3", "eval_every=20"]
    args = [
        "distill",
        "--teacher",
        classifier_folder["model"],
        "--student",
        "tiny",
        "--task",
        "classify",
        "--data",
        classifier_folder["train"],
        *(x for s in settings for x in ("--set", s)),
    ]
    distilled = run_cli(*args, "--out", root / "distilled")
    assert distilled.exit_code == 0, distilled.output
    plain = run_cli(
        *args, "--out", root / "plain", "--set", "w_kd=0", "--set", "w_hidden=0", "--set", "w_hard=1"
    )
    assert plain.exit_code == 0, plain.output
    return {
        name: json.loads((root / name / "metrics.json").read_text()) | {"dir": root / name}
        for name in ("distilled", "plain")
    }


def test_a_distilled_classifier_is_closer_to_its_teacher_than_one_trained_without_it(classify_runs):
    distilled, plain = classify_runs["distilled"], classify_runs["plain"]
    assert distilled["agreement"]["kl"] < plain["agreement"]["kl"]
    assert distilled["teacher"] == plain["teacher"]


def test_the_classifier_student_has_the_teachers_labels_and_evaluate_scores_it(
    classify_runs, classifier_folder
):
    out = classify_runs["distilled"]["dir"]
    teacher = load_bundle(classifier_folder["model"])
    student = load_bundle(out)
    assert student.head("classify", "classify")["labels"] == teacher.head("classify")["labels"]
    assert student.usage("classify")["max_len"] == teacher.usage("classify")["max_len"]
    result = run_cli(
        "evaluate", out, "--task", "classify", "--data", classifier_folder["train"], "--device", "cpu"
    )
    assert result.exit_code == 0, result.output
    assert "accuracy:" in result.output


@pytest.fixture(scope="module")
def other_vocab_folder(lm_folder, tmp_path_factory):
    """A model folder whose vocabulary is not the teacher's."""
    config = ModelConfig(vocab_size=999, d_model=16, n_layers=1, n_heads=2, d_ff=32, seq_len=T, mem_len=0)
    return save_model_folder(
        tmp_path_factory.mktemp("other") / "model",
        Transformer(config),
        config,
        lm_folder,
        {"lm": {"task": "causal_lm"}},
    )


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("vocab", "vocabulary"),
        ("vocab_folder", "vocabulary"),
        ("preset", "neither a model folder nor a preset"),
        ("teacher", "not a model folder"),
        ("out", "already exists"),
    ],
)
def test_bad_input_is_one_line_and_status_1(case, expected, lm_folder, other_vocab_folder, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "taken").mkdir()
    args = {"teacher": lm_folder, "student": "tiny", "out": tmp_path / "new"}
    extra: list[str] = []
    if case == "vocab":
        extra = ["--set", "student_config.vocab_size=999"]
    elif case == "vocab_folder":
        args["student"] = other_vocab_folder
    elif case == "preset":
        args["student"] = "huge"
    elif case == "teacher":
        args["teacher"] = tmp_path / "empty"
    else:
        args["out"] = tmp_path / "taken"
    result = run_cli("distill", *(x for k, v in args.items() for x in (f"--{k}", v)), *extra)
    assert expected in one_line_error(result)
    assert not (tmp_path / "new").exists()
