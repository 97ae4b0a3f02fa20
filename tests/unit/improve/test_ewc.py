"""Incremental training with elastic weight consolidation, against independent references.

- the Fisher of a classifier's last layer is the closed form of softmax regression (per-example
  and Avalanche's batched estimator), and every parameter's Fisher equals squared per-example
  gradients taken by autograd from one padded batched forward; a head without gradient has none;
- the penalty's gradient is lambda * sum_k F_k (theta - theta*_k), and a parameter absent when the
  Fisher was computed is not pulled;
- with lambda 0 a round ends with exactly the weights `finetune` alone reaches; with a large
  lambda the Fisher-weighted distance to theta* is a small fraction of that;
- separate keeps one (theta*, F) pair per Fisher, online one decayed sum pulled to the newest
  weights, over two rounds; round 2's first penalty is the one its saved pairs imply;
- replay mixes the asked share of old examples; staged training files read back unchanged;
- the output folder loads, keeps the head's label set, and its manifest names the base;
- bad input (labels the head lacks, no Fisher to start from, a mode switch): one line, nothing written.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from lmforge.artifacts import read_manifest
from lmforge.config import ConfigError
from lmforge.data.documents import DataError
from lmforge.data.tasks import TaggedExample, TextExample
from lmforge.improve.ewc import Consolidated, EwcState, fisher_diagonal, load_state
from lmforge.improve.incremental import (
    ImproveConfig,
    improve_train,
    read_checked,
    replay_mix,
    write_examples,
)
from lmforge.model import ModelConfig, Transformer
from lmforge.model.bundle import load_bundle
from lmforge.model.heads import MultiTaskModel, SequenceClassificationHead, TokenClassificationHead, pool
from lmforge.model.inputs import pad, pad_batch
from lmforge.model.masking import IGNORE_INDEX
from lmforge.train.finetune import finetune
from lmforge.train.finetune_config import FinetuneConfig
from lmforge.train.finetune_data import Encoded, read_examples

N_LABELS, LENGTHS = 3, (5, 2, 6, 3, 4)


def tiny_classifier() -> MultiTaskModel:
    """A 1-block float64 model with the head under test and a second head that gets no gradient,
    in train mode with dropout, as fine-tuning leaves it (the Fisher is taken without dropout)."""
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=30, d_model=8, n_layers=1, n_heads=2, d_ff=16, seq_len=8, mem_len=8,
                         dropout=0.3)
    heads = torch.nn.ModuleDict({"cls": SequenceClassificationHead(8, N_LABELS, dropout=0.3),
                                 "other": SequenceClassificationHead(8, 2, dropout=0.3)})
    model = MultiTaskModel(Transformer(config), heads).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model


def tiny_data() -> Encoded:
    generator = torch.Generator().manual_seed(1)
    ids = [torch.randint(3, 30, (n,), generator=generator).tolist() for n in LENGTHS]
    targets = [i % N_LABELS for i in range(len(ids))]
    return Encoded(ids, targets, [str(t) for t in targets])


def per_example_gradients(model: MultiTaskModel, data: Encoded) -> list[dict[str, torch.Tensor]]:
    """d loss_n / d theta for every example from ONE padded forward of all of them (autograd.grad)."""
    model.eval()
    idx, mask = pad_batch(data.ids)
    _, logits = model("cls", idx, mask)
    losses = F.cross_entropy(logits, torch.tensor(data.targets), reduction="none")
    names, params = zip(*model.named_parameters(), strict=True)
    grads = []
    for loss in losses:
        g = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        grads.append({name: t for name, t in zip(names, g, strict=True) if t is not None})
    return grads


def batches(n: int, size: int) -> list[range]:
    return [range(s, min(s + size, n)) for s in range(0, n, size)]


ESTIMATORS = [("example", 1), ("example", 4), ("batch", 2), ("batch", 3)]
"""(estimator, batch_size): per-example gradients one or four at a time; mini-batches of 2 or 3."""


def group(estimator: str, batch_size: int) -> int:
    """Examples whose mean gradient is squared: one (per-example) or a mini-batch."""
    return 1 if estimator == "example" else batch_size


@pytest.mark.parametrize("estimator,batch_size", ESTIMATORS)
def test_the_classifier_layer_fisher_is_the_closed_form_of_softmax_regression(estimator, batch_size):
    """For logits W h + b, d loss / dW = (p - y) h^T and d loss / db = p - y."""
    model, data = tiny_classifier(), tiny_data()
    fisher = fisher_diagonal(model, "cls", data, estimator, batch_size=batch_size)
    size = group(estimator, batch_size)
    assert model.training
    with torch.no_grad():
        model.eval()
        h = torch.stack([pool(model.encode(torch.tensor([ids])), None, "mean")[0] for ids in data.ids])
        layer = model.heads["cls"].classifier
        error = torch.softmax(h @ layer.weight.T + layer.bias, -1) - F.one_hot(torch.tensor(data.targets),
                                                                               N_LABELS)
    weight = torch.stack([(error[list(r)].unsqueeze(2) * h[list(r)].unsqueeze(1)).mean(0)
                          for r in batches(len(data.ids), size)])
    bias = torch.stack([error[list(r)].mean(0) for r in batches(len(data.ids), size)])
    torch.testing.assert_close(fisher["heads.cls.classifier.weight"], weight.pow(2).mean(0))
    torch.testing.assert_close(fisher["heads.cls.classifier.bias"], bias.pow(2).mean(0))


@pytest.mark.parametrize("estimator,batch_size", ESTIMATORS)
def test_every_parameters_fisher_is_the_mean_squared_gradient_autograd_gives(estimator, batch_size):
    model, data = tiny_classifier(), tiny_data()
    fisher = fisher_diagonal(model, "cls", data, estimator, batch_size=batch_size)
    size = group(estimator, batch_size)
    grads = per_example_gradients(model, data)
    assert set(fisher) == set(grads[0]) and not any(name.startswith("heads.other") for name in fisher)
    for name in fisher:
        means = [torch.stack([grads[i][name] for i in r]).mean(0) for r in batches(len(grads), size)]
        torch.testing.assert_close(fisher[name], torch.stack(means).pow(2).mean(0), msg=name)


def tagged_data() -> Encoded:
    """Tags on some tokens (-100 on continuation pieces); the fourth sentence has none left."""
    ids = tiny_data().ids
    targets = [[IGNORE_INDEX if (j % 3 == 1 or i == 3) else (i + j) % N_LABELS for j in range(len(row))]
               for i, row in enumerate(ids)]
    return Encoded(ids, targets, [[] for _ in ids])


@pytest.mark.parametrize("estimator,batch_size", [("example", 4), ("batch", 2)])
def test_an_ner_example_is_a_sentence_and_untagged_sentences_are_left_out(estimator, batch_size):
    """Per-example: each sentence's mean token loss; batched: the batch's mean over its tagged tokens."""
    model, data = tiny_classifier(), tagged_data()
    model.heads["ner"] = TokenClassificationHead(8, N_LABELS, dropout=0.3).double()
    fisher = fisher_diagonal(model, "ner", data, estimator, batch_size=batch_size)
    model.eval()
    idx, mask = pad_batch(data.ids)
    labels = pad(data.targets, IGNORE_INDEX)
    _, logits = model("ner", idx, mask)
    token = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX,
                            reduction="none").view(labels.shape)
    tagged = [i for i in range(len(data.ids)) if i != 3]
    size = group(estimator, batch_size)
    groups = [tagged[s:s + size] for s in range(0, len(tagged), size)]
    names, params = zip(*model.named_parameters(), strict=True)
    squares: dict[str, list[torch.Tensor]] = {}
    for rows in groups:
        loss = token[rows].sum() / (labels[rows] != IGNORE_INDEX).sum()
        for name, g in zip(names, torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True),
                           strict=True):
            if g is not None:
                squares.setdefault(name, []).append(g.pow(2))
    assert set(fisher) == set(squares)
    for name, values in squares.items():
        torch.testing.assert_close(fisher[name], torch.stack(values).mean(0), msg=name)


def test_the_penalty_gradient_is_lambda_f_times_the_displacement_summed_over_pairs():
    model, strength = tiny_classifier(), 3.5
    names = ["backbone.tok_emb.weight", "heads.cls.classifier.weight"]
    fishers = [{n: torch.rand_like(dict(model.named_parameters())[n]) for n in names} for _ in range(2)]
    state = EwcState("separate").consolidate(model, fishers[0], {})
    anchors = [{n: p.detach().clone() for n, p in model.named_parameters()}]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    state = state.consolidate(model, fishers[1], {})
    anchors.append({n: p.detach().clone() for n, p in model.named_parameters()})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model.heads["new"] = SequenceClassificationHead(8, 2).double()  # absent when the Fisher was taken
    penalty = sum(term(model) for term in state.regularisers(strength))
    penalty.backward()
    params = dict(model.named_parameters())
    for name in names:
        expected = sum(strength * f[name] * (params[name] - a[name]) for f, a in zip(fishers, anchors,
                                                                                     strict=True))
        torch.testing.assert_close(params[name].grad, expected.detach())
    value = sum(strength / 2 * (f[n] * (params[n] - a[n]) ** 2).sum() for f, a in zip(fishers, anchors,
                                                                                       strict=True)
                for n in names)
    torch.testing.assert_close(penalty.detach(), value.detach())
    assert all(p.grad is None for n, p in params.items() if n not in names)


def test_online_keeps_one_decayed_sum_at_the_newest_weights():
    model = tiny_classifier()
    name = "heads.cls.classifier.bias"
    first, second = {name: torch.tensor([1.0, 2.0, 4.0])}, {name: torch.tensor([8.0, 0.0, 1.0])}
    state = EwcState("online", decay=0.5).consolidate(model, first, {"round": 1})
    with torch.no_grad():
        model.heads["cls"].classifier.bias.add_(1.0)
    state = state.consolidate(model, second, {"round": 2})
    assert len(state.entries) == 1 and [h["round"] for h in state.history] == [1, 2]
    torch.testing.assert_close(state.entries[0].fisher[name], torch.tensor([8.5, 1.0, 3.0]))
    torch.testing.assert_close(state.entries[0].anchor[name], model.heads["cls"].classifier.bias.detach())


def test_replay_makes_the_asked_share_of_the_training_examples():
    new = [TextExample(f"new {i}", "a") for i in range(14)]
    old = [TextExample(f"old {i}", "b") for i in range(100)]
    mixed = replay_mix(new, old, 0.3, seed=0)
    assert mixed[:14] == new and len(mixed) == 14 + 6  # 6 / 20 = 0.3
    assert len({e.text for e in mixed[14:]}) == 6 and all(e in old for e in mixed[14:])
    assert len(replay_mix(new, old[:3], 0.5, seed=0)) == 17  # all 3 when fewer than asked
    assert replay_mix(new, old, 0.0, seed=0) == new


def test_staged_training_files_read_back_unchanged(tmp_path):
    texts = [TextExample('a "quoted", comma', "x"), TextExample("two\nlines\tand a tab", "y")]
    named = write_examples(tmp_path / "named", texts, "sentence", "label")
    assert read_examples(named, "classify", "sentence", "label") == texts
    positional = write_examples(tmp_path / "positional", texts, 2, 0)
    assert read_examples(positional, "classify", 2, 0) == texts
    tagged = [TaggedExample(["New York", "is"], ["B-loc", "O"]), TaggedExample(["x"], ["O"])]
    assert read_examples(write_examples(tmp_path / "ner", tagged, "text", "label"), "ner", 0, 0) == tagged


def test_tags_outside_the_heads_label_set_are_named_with_the_file(tmp_path):
    conll = tmp_path / "fixed.conll"
    conll.write_text("Paris\tB-loc\nsword\tB-weapon\n\nBob\tB-per\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_checked(conll, "ner", "text", "label", ["O", "B-loc", "I-loc"], "ner")
    message = str(err.value)
    assert str(conll) in message and "B-per, B-weapon" in message and "\n" not in message


# -- whole rounds on the SST-2 classifier fixture ----------------------------------------------------

TRAIN = {"steps": 8, "batch_size": 8, "eval_every": 4, "lr": 1e-3, "device": "cpu", "fisher_samples": 48}


def sst2(source, first: int, n: int, label: str | None = None) -> list[TextExample]:
    rows = read_examples(source, "classify", "sentence", "label")[first:]
    return [r for r in rows if label is None or r.label == label][:n]


def as_corrections(rows: list[TextExample]) -> str:
    """The JSONL `improve corrections` writes (the old task's data stays in SST-2's TSV)."""
    return "".join(json.dumps({"text": r.text, "label": r.label}) + "\n" for r in rows)


@pytest.fixture(scope="module")
def files(classifier_folder, shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("ewc")
    test = shared_data / "sst2/test.tsv"
    named = {"a": sst2(test, 0, 40), "b": sst2(test, 40, 40), "ones": sst2(test, 80, 20, "1")}
    for name, rows in named.items():
        (root / f"{name}.jsonl").write_text(as_corrections(rows), encoding="utf-8")
    old_ones = root / "old_ones.tsv"  # in the layout the head was trained on, as replay data is
    rows = "".join(f"{r.text}\t{r.label}\n" for r in sst2(test, 200, 60, "1"))
    old_ones.write_text("sentence\tlabel\n" + rows, encoding="utf-8")
    return {"root": root, "base": classifier_folder["model"], "old": classifier_folder["train"],
            "old_ones": old_ones, **{name: root / f"{name}.jsonl" for name in named}}


def round_(files, out: str, base=None, data="a", **settings):
    cfg = ImproveConfig(base=base or files["base"], data=files[data], out=files["root"] / out,
                        **{**TRAIN, **settings})
    return improve_train(cfg)


def weights(folder) -> dict[str, torch.Tensor]:
    bundle = load_bundle(folder)
    return {name: p.detach() for name, p in bundle.task_model("classify").named_parameters()}


def weighted_distance(pair: Consolidated, folder) -> float:
    """sum F (theta - theta*)^2 of `folder`'s weights, in float64."""
    params = weights(folder)
    return float(sum((pair.fisher[n].double() * (params[n].double() - pair.anchor[n].double()) ** 2).sum()
                     for n in pair.fisher))


def test_lambda_zero_is_plain_finetuning_and_a_large_lambda_stays_near_theta_star(files, tmp_path):
    """One evaluation, at the end: the weights compared are the last ones, not an early best."""
    longer = {"steps": 16, "eval_every": 16}
    plain = round_(files, "lambda0", ewc_lambda=0.0, fisher_data=files["old"], **longer)
    reference = finetune(FinetuneConfig(
        model=files["base"], task="classify", out=tmp_path / "reference", max_len=32, weight_decay=0.0,
        data={"train": files["a"]},
        **{**{k: v for k, v in TRAIN.items() if k != "fisher_samples"}, **longer}), resume=None)
    mine, theirs = weights(plain.model_dir), weights(reference.model_dir)
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[n], theirs[n]) for n in mine)
    held = round_(files, "lambda-big", ewc_lambda=1e6, fisher_data=files["old"], **longer)
    pair = load_state(held.model_dir).entries[0]
    assert weighted_distance(pair, held.model_dir) < 0.05 * weighted_distance(pair, plain.model_dir)


@pytest.fixture(scope="module")
def two_rounds(files):
    """Both modes, two rounds at lambda 0 (so they train alike), then round 2 again at lambda 10."""
    runs = {}
    for mode in ("separate", "online"):
        first = round_(files, f"{mode}-1", ewc_lambda=0.0, fisher_data=files["old"], mode=mode, decay=0.5)
        second = round_(files, f"{mode}-2", base=first.model_dir, data="b", ewc_lambda=0.0, mode=mode,
                        decay=0.5)
        pulled = round_(files, f"{mode}-2-pulled", base=first.model_dir, data="b", ewc_lambda=10.0,
                        mode=mode, decay=0.5)
        runs[mode] = (first, second, pulled)
    return runs


def test_separate_keeps_a_pair_per_fisher_and_online_one_decayed_sum(two_rounds, files):
    (first, second, _), (_, online, _) = two_rounds["separate"], two_rounds["online"]
    separate = load_state(second.model_dir)
    assert len(separate.entries) == 3 and len(load_state(online.model_dir).entries) == 1
    folders = (files["base"], first.model_dir, second.model_dir)
    for pair, folder in zip(separate.entries, folders, strict=True):
        params = weights(folder)
        assert all(torch.equal(pair.anchor[n], params[n]) for n in pair.anchor)
    assert [h["data"] for h in separate.history] == [str(files[k].resolve()) for k in ("old", "a", "b")]
    merged = load_state(online.model_dir).entries[0]
    for name, f in merged.fisher.items():
        decayed = zip((0.25, 0.5, 1.0), separate.entries, strict=True)
        expected = sum(w * pair.fisher[name] for w, pair in decayed)
        torch.testing.assert_close(f, expected, msg=name)
    assert all(torch.equal(merged.anchor[n], separate.entries[2].anchor[n]) for n in merged.anchor)


def test_round_two_pulls_towards_every_saved_anchor(two_rounds, files):
    """At step 1 the weights are round 1's: separate still pays for leaving the base weights;
    online's one anchor is round 1's weights, so it pays nothing yet."""
    first, _, pulled = two_rounds["separate"]
    expected = 10.0 / 2 * weighted_distance(load_state(first.model_dir).entries[0], first.model_dir)
    assert expected > 0
    assert pulled.history[0]["penalty"] == pytest.approx(expected, rel=1e-4)
    assert two_rounds["online"][2].history[0]["penalty"] == 0.0


def test_the_output_loads_keeps_every_label_and_names_its_parent(files):
    """Corrections and replay of one label only: the head still has both."""
    result = round_(files, "ones", data="ones", ewc_lambda=1.0, fisher_data=files["old"],
                    replay=files["old_ones"], replay_ratio=0.5)
    bundle = load_bundle(result.model_dir)
    assert bundle.head("classify")["labels"] == ["0", "1"]
    assert bundle.usage("classify")["text_column"] == "sentence"
    manifest = read_manifest(result.model_dir)
    assert manifest["stage"] == "improve" and manifest["parents"][0]["path"] == str(files["base"].resolve())
    assert {"ewc.json", "ewc.safetensors", "model.safetensors"} <= manifest["files"].keys()
    metrics = json.loads((result.model_dir / "metrics.json").read_text())
    assert metrics["improve"]["replayed"] == result.replayed == 20 and metrics["improve"]["corrections"] == 20


def nothing_written(files, out: str) -> bool:
    return not any(p.name.startswith((out, f".{out}")) for p in files["root"].iterdir())


def test_labels_the_head_lacks_are_refused_and_nothing_is_written(files):
    bad = files["root"] / "bad.tsv"
    bad.write_text("sentence\tlabel\ngood film\t1\nmeh\tneutral\nawful\t2\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        round_(files, "bad-out", data="a", ewc_lambda=1.0, fisher_data=bad)
    message = str(err.value)
    assert message.startswith(str(bad)) and "2, neutral" in message and "\n" not in message
    assert nothing_written(files, "bad-out")


def test_without_a_fisher_to_start_from_the_user_is_told_to_pass_one(files):
    with pytest.raises(ConfigError, match="--fisher-data"):
        round_(files, "no-fisher", ewc_lambda=1.0)
    assert nothing_written(files, "no-fisher")


def test_a_round_continues_the_mode_its_base_was_trained_in(two_rounds, files):
    with pytest.raises(ConfigError, match="--mode separate"):
        round_(files, "switched", base=two_rounds["separate"][0].model_dir, ewc_lambda=1.0, mode="online")
    assert nothing_written(files, "switched")
