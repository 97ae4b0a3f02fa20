"""Every verb on bad input: exit status 1, one `error: ...` line naming the file or key, no traceback.

The table runs in-process through typer's CliRunner (a subprocess would pay seconds of torch
import per case); one case also runs as real processes (the installed `lmforge` script and
`python -m lmforge`) to show they behave the same. Paths with a quote and a space are also
checked where they exist: they must work, not just fail well. A case that fails because of a
file this table's owner does not own is in XFAIL, naming that file.
"""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path

import pytest
from processes import run_bounded
from typer.testing import CliRunner, Result

from lmforge.cli import app
from lmforge.records import RequestLog, open_store

QUOTED = "it's data.tsv"
"""A training file whose name holds a quote and a space: options used to be pasted into YAML."""
TINY_FINETUNE = ["--set", "steps=2", "--set", "batch_size=4", "--set", "eval_every=2"]


@pytest.fixture(scope="module")
def ws(tmp_path_factory, pretrain_config) -> Path:
    """A folder of bad inputs beside a real 2-step model, its tokenizer and tokens, and a fine-tuned
    classifier trained from QUOTED (so a quoted path must work for the other cases to run; the
    `--set model=elsewhere` shows the MODEL argument wins over `--set`)."""
    from lmforge.train import pretrain

    root = tmp_path_factory.mktemp("bad input")
    model = pretrain(pretrain_config(root / "run", steps=2, eval_every=2, checkpoint_every=2)).model_dir
    cfg = pretrain_config(root / "run")
    shutil.copytree(model, root / "model")
    shutil.copytree(cfg.data.tokenizer, root / "tokenizer")
    shutil.copytree(cfg.data.tokens, root / "tokens")
    rows = [f"{'a fine film' if i % 2 else 'a dull film'} number {i}\t{i % 2}" for i in range(40)]
    (root / QUOTED).write_text("text\tlabel\n" + "\n".join(rows) + "\n")
    (root / "docs.jsonl").write_text("".join(f'{{"text": "document {i} about films"}}\n' for i in range(30)))
    for name in ("empty.tsv", "empty.jsonl", "empty.yaml", "empty.conll"):
        (root / name).write_text("")
    (root / "bad.yaml").write_text("name: x\ntrain: [1,\n")
    (root / "folder").mkdir()
    (root / "folder.tsv").mkdir()
    (root / "broken tokenizer").mkdir()
    (root / "broken tokenizer" / "tokenizer.json").write_text("{not json")
    shutil.copytree(root / "model", root / "model with broken tokenizer")
    (root / "model with broken tokenizer" / "tokenizer.json").write_text("{not json")
    joint = "model: model\nout: joint\ntasks:\n" + "".join(
        f"  - {{task: classify, head: {head}, data: {{train: \"{train}\"}}}}\n"
        for head, train in (("same", QUOTED), ("same", QUOTED), ("other", "no.tsv")))
    (root / "same heads.yaml").write_text(joint.rsplit("  - ", 1)[0])
    (root / "missing task data.yaml").write_text(joint.replace("same", "one", 1))
    (root / "pretrain.yaml").write_text(f"name: t\nout: out\ndata: {{tokens: tokens, tokenizer: tokenizer}}\n"
                                        f"model: {cfg.model.model_dump_json(exclude={'preset'})}\n")
    (root / "other labels.tsv").write_text("text\tlabel\nan odd film\t7\n")
    one_arm = [RequestLog(id=f"r{i}", model="a", model_version="v", route="/v1/classify", task="classify",
                          input_text="x", output={"label": "1"}, latency_ms=1.0, experiment="e", variant="a",
                          user=f"u{i}") for i in range(40)]
    with open_store(root / "ab.db") as store:
        store.log_requests(one_arm)
    result = invoke(root, "finetune", "model", "--task", "classify", "--data", QUOTED, "--out", "tuned",
                    "--set", "model=elsewhere", *TINY_FINETUNE)
    assert result.exit_code == 0, result.output
    return root


def invoke(cwd: Path, *args: str) -> Result:
    """Run the command line in-process, in `cwd` (relative paths are the user's)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        return CliRunner().invoke(app, list(args))


def error_line(result: Result) -> str:
    """The one line a user error must print; fails on a traceback or on more (or less) output."""
    assert type(result.exception) is SystemExit, f"not a one-line error: {result.exception!r}"
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "error" not in result.stdout.lower(), result.stdout
    return lines[0]


CASES = [  # (case, command line as a user types it, what its one error line must contain)
    ("run/missing config", "run --config no.yaml", "no.yaml: no such file"),
    ("run/config is a folder", "run --config folder", "folder: is a folder"),
    ("run/bad yaml", "run --config bad.yaml", "bad.yaml:3: not valid YAML"),
    ("run/unknown key", "run --set train.lrr=1", "unknown key 'train.lrr'"),
    ("run/wrong type", "run --set train.steps=x", "train.steps: Input should be a valid integer"),
    ("run/bad --set value", "run --set 'corpus.sources=[a'", "--set 'corpus.sources=[a'"),
    ("run/quoted missing source", "run --set root=runs --set \"corpus.sources=[no one's.jsonl]\"",
     "no one's.jsonl: no such file"),
    ("run/empty source", "run --set root=runs --set corpus.sources=[empty.jsonl]",
     "no documents found in empty.jsonl"),
    ("run/unknown stage to stop after", "run --set stop_after=deploy",
     "stop_after='deploy': expected one of corpus, curate"),
    ("report/not a run folder", "report folder", "folder: not a run folder of `lmforge run`"),
    ("curate/missing config", "curate no.yaml", "no.yaml: no such file"),
    ("curate/config is a folder", "curate folder", "folder: is a folder"),
    ("curate/bad yaml", "curate bad.yaml", "bad.yaml:3: not valid YAML"),
    ("curate/empty config", "curate empty.yaml", "empty.yaml: sources: required"),
    ("curate/unknown key", "curate --set sources=[docs.jsonl] --set out=c --set wrkers=2",
     "unknown key 'wrkers'"),
    ("curate/wrong type", "curate --set sources=[docs.jsonl] --set out=c --set workers=x",
     "workers: Input should be a valid integer"),
    ("curate/missing source", "curate --set sources=[no.jsonl] --set out=c1", "no.jsonl: no such file"),
    ("curate/quoted missing source", "curate --set \"sources=[no one's.jsonl]\" --set out=c2",
     "no one's.jsonl"),
    ("tokenizer train/missing data", "tokenizer train --data no.jsonl --out t", "no.jsonl: no such file"),
    ("tokenizer train/quoted missing data", "tokenizer train --data \"no one's.jsonl\" --out t",
     "no one's.jsonl: no such file"),
    ("tokenizer train/empty data", "tokenizer train --data empty.jsonl --out t",
     "no documents found in empty.jsonl"),
    ("tokenizer train/config is a folder", "tokenizer train folder", "folder: is a folder"),
    ("tokenizer train/bad yaml", "tokenizer train bad.yaml", "bad.yaml:3: not valid YAML"),
    ("tokenizer train/unknown key", "tokenizer train --data docs.jsonl --out t --set vocab=300",
     "unknown key 'vocab'"),
    ("tokenizer train/wrong type", "tokenizer train --data docs.jsonl --out t --set vocab_size=x",
     "vocab_size: Input should be a valid integer"),
    ("tokenizer train/out exists", "tokenizer train --data docs.jsonl --out folder",
     "folder: already exists"),
    ("tokenizer train/out under a file", "tokenizer train --data docs.jsonl --out docs.jsonl/t",
     "docs.jsonl/t: cannot write here"),
    ("tokenizer pack/not a tokenizer", "tokenizer pack --data docs.jsonl --out p --set tokenizer=folder",
     "folder: no tokenizer.json found"),
    ("tokenizer pack/broken tokenizer",
     "tokenizer pack --data docs.jsonl --out p --set 'tokenizer=broken tokenizer'",
     "broken tokenizer/tokenizer.json: not a tokenizer file"),
    ("tokenizer pack/missing data", "tokenizer pack --data no.jsonl --out p --set tokenizer=tokenizer",
     "no.jsonl: no such file"),
    ("tokenizer pack/empty config", "tokenizer pack empty.yaml", "empty.yaml: data: required"),
    ("tokenizer pack/wrong type",
     "tokenizer pack --data docs.jsonl --out p --set tokenizer=tokenizer --set val_fraction=x",
     "val_fraction: Input should be a valid number"),
    ("pretrain/missing config", "pretrain no.yaml", "no.yaml: no such file"),
    ("pretrain/config is a folder", "pretrain folder", "folder: is a folder"),
    ("pretrain/bad yaml", "pretrain bad.yaml", "bad.yaml:3: not valid YAML"),
    ("pretrain/empty config", "pretrain empty.yaml", "empty.yaml: data: required"),
    ("pretrain/unknown key", "pretrain pretrain.yaml --set train.stepz=1", "unknown key 'train.stepz'"),
    ("pretrain/wrong type", "pretrain pretrain.yaml --set train.steps=x", "train.steps: Input should be"),
    ("pretrain/not a token folder", "pretrain pretrain.yaml --set data.tokens=folder",
     "folder: no index.json"),
    ("pretrain/quoted missing tokens", "pretrain pretrain.yaml --set \"data.tokens=no one's\"",
     "no one's: no index.json"),
    ("pretrain/not a tokenizer", "pretrain pretrain.yaml --set data.tokenizer=folder",
     "folder: no tokenizer.json"),
    ("pretrain/broken tokenizer", "pretrain pretrain.yaml --set 'data.tokenizer=broken tokenizer'",
     "broken tokenizer/tokenizer.json"),
    ("finetune/missing data", "finetune model --task classify --data no.tsv", "no.tsv: no such file"),
    ("finetune/quoted missing data", "finetune model --task classify --data \"no one's.tsv\"",
     "no one's.tsv: no such file"),
    ("finetune/data is a folder", "finetune model --task classify --data folder.tsv",
     "folder.tsv: is a folder"),
    ("finetune/empty data", "finetune model --task classify --data empty.tsv", "empty.tsv: no header"),
    ("finetune/empty conll", "finetune model --task ner --data empty.conll", "empty.conll: no examples"),
    ("finetune/missing dev", "finetune model --task classify --data \"it's data.tsv\" --dev no.tsv",
     "no.tsv: no such file"),
    ("finetune/not a model", "finetune folder --task classify --data \"it's data.tsv\"",
     "folder: not a model folder"),
    ("finetune/broken tokenizer",
     "finetune 'model with broken tokenizer' --task classify --data \"it's data.tsv\"",
     "model with broken tokenizer/tokenizer.json"),
    ("finetune/out under a file",
     "finetune model --task classify --data \"it's data.tsv\" --out docs.jsonl/m --set steps=2",
     "docs.jsonl/checkpoints/m: cannot write here"),
    ("finetune/unknown task", "finetune model --task clasify --data \"it's data.tsv\"",
     "task: Input should be"),
    ("finetune/bad yaml", "finetune model --task classify --data \"it's data.tsv\" --config bad.yaml",
     "bad.yaml:3: not valid YAML"),
    ("finetune/unknown key", "finetune model --task classify --data \"it's data.tsv\" --set stepz=1",
     "unknown key 'stepz'"),
    ("finetune/wrong type", "finetune model --task classify --data \"it's data.tsv\" --set steps=x",
     "steps: Input should be a valid integer"),
    ("multitask/missing config", "multitask no.yaml", "no.yaml: no such file"),
    ("multitask/config is a folder", "multitask folder", "folder: is a folder"),
    ("multitask/bad yaml", "multitask bad.yaml", "bad.yaml:3: not valid YAML"),
    ("multitask/empty config", "multitask empty.yaml", "empty.yaml: model: required"),
    ("multitask/duplicate heads", "multitask 'same heads.yaml'", "head names must be distinct; same appears"),
    ("multitask/unknown key", "multitask 'same heads.yaml' --set stepz=1", "unknown key 'stepz'"),
    ("multitask/wrong type", "multitask 'same heads.yaml' --set steps=x", "steps: Input should be"),
    ("multitask/missing task data", "multitask 'missing task data.yaml'", "no.tsv: no such file"),
    ("multitask/not a model", "multitask 'missing task data.yaml' --set model=folder",
     "folder: not a model folder"),
    ("evaluate/missing data", "evaluate tuned --task classify --data no.tsv", "no.tsv: no such file"),
    ("evaluate/quoted missing data", "evaluate tuned --task classify --data \"no one's.tsv\"",
     "no one's.tsv: no such file"),
    ("evaluate/data is a folder", "evaluate tuned --task classify --data folder.tsv",
     "folder.tsv: is a folder"),
    ("evaluate/empty data", "evaluate tuned --task classify --data empty.tsv", "empty.tsv: no header"),
    ("evaluate/not a model", "evaluate folder --task classify --data \"it's data.tsv\"",
     "folder: not a model folder"),
    ("evaluate/no such head", "evaluate model --task classify --data \"it's data.tsv\"",
     "no 'classify' head"),
    ("generate/not a model", "generate folder", "folder: not a model folder"),
    ("generate/missing model", "generate \"no one's model\"", "no one's model: not a model folder"),
    ("generate/broken tokenizer", "generate 'model with broken tokenizer'",
     "model with broken tokenizer/tokenizer.json: not a tokenizer file"),
    ("export/not a model", "export folder --format onnx", "folder: not a model folder"),
    ("export/missing model", "export \"no one's model\" --format onnx", "no one's model: not a model folder"),
    ("export/unknown format", "export model --format onx", "unknown export format 'onx'"),
    ("export/out exists", "export model --format onnx --out folder", "folder: already exists"),
    ("export/no such head", "export model --format onnx --head nope", "no head named 'nope'"),
    ("export/out under a file", "export model --format torchscript --out docs.jsonl/e",
     "docs.jsonl/e: cannot write here"),
    ("model info/unknown preset", "model info giant", "valid presets"),
    ("model info/unknown key", "model info tiny --set dmodel=3", "unknown key 'dmodel'"),
    ("model info/wrong type", "model info tiny --set d_model=x", "d_model: Input should be"),
    ("parallel plan/missing config", "parallel plan no.yaml", "no.yaml: no such file"),
    ("parallel plan/config is a folder", "parallel plan folder", "folder: is a folder"),
    ("parallel plan/bad yaml", "parallel plan bad.yaml", "bad.yaml:3: not valid YAML"),
    ("parallel plan/unknown key", "parallel plan pretrain.yaml --set parallel.ttp=2",
     "unknown key 'parallel.ttp'"),
    ("parallel plan/wrong type", "parallel plan pretrain.yaml --set parallel.tp=x",
     "parallel.tp: Input should be"),
    ("parallel plan/layout does not fit", "parallel plan pretrain.yaml --world 3 --set parallel.tp=3",
     "tp=3 does not divide n_heads=2"),
    ("parallel plan/not a tokenizer", "parallel plan pretrain.yaml --set data.tokenizer=folder",
     "folder: no tokenizer.json"),
    ("serve/review without records", "serve tuned --review --check",
     "review: the review page reads the records"),
    ("serve/variant not served", "serve tuned --check --set 'experiments=[{name: x, variants: "
     "[{model: tuned}, {model: nope}]}]'", "variant 'nope' is not a served model"),
    ("serve/bad records URL", "serve tuned --records mysql://db/x --check", "mysql://db/x"),
    ("improve mine/nothing logged", "improve mine tuned --records records.db", "no logged classify requests"),
    ("improve mine/not a model", "improve mine folder --records records.db", "folder: not a model folder"),
    ("improve mine/no ner head", "improve mine tuned --task ner --records records.db",
     "expected exactly one ner head"),
    ("improve export/empty queue", "improve export --records records.db --queue q --out q.json",
     "queue 'q' has no pending items"),
    ("improve import/not label studio", "improve import docs.jsonl --records records.db --queue q",
     "docs.jsonl: not a Label Studio JSON export"),
    ("improve corrections/none", "improve corrections --records records.db --queue q --out fixes.jsonl",
     "queue 'q' has no corrections"),
    ("improve train/labels disagree", f"improve train --base tuned --data 'other labels.tsv' --fisher-data "
     f"\"{QUOTED}\" --ewc-lambda 1", "other labels.tsv"),
    ("improve train/no fisher", f"improve train --base tuned --data \"{QUOTED}\" --ewc-lambda 1",
     "--fisher-data"),
    ("label/no ner head", "label tuned docs.jsonl --records records.db", "no NER head"),
    ("label/not texts", f"label tuned \"{QUOTED}\" --records records.db", "expected a .txt file"),
    ("abtest analyze/nothing logged", "abtest analyze --records records.db --experiment e --variants a,b",
     "no logged requests of experiment 'e'"),
    ("abtest analyze/one variant empty", "abtest analyze --records ab.db --experiment e --variants a,b",
     "variant b has no units"),
    ("abtest analyze/one variant named", "abtest analyze --records ab.db --experiment e --variants a",
     "two or more variants"),
    ("abtest promote/no server", "abtest promote --experiment e --variant b --url http://127.0.0.1:9",
     "cannot reach the server"),
    ("abtest promote/not an analysis", "abtest promote --experiment e --analysis docs.jsonl",
     "docs.jsonl: not an analysis.json"),
]



@pytest.mark.parametrize(("command", "expected"), [
    pytest.param(command, expected, id=case) for case, command, expected in CASES])
def test_bad_input_is_one_line(ws, command, expected):
    assert expected in error_line(invoke(ws, *shlex.split(command)))


def test_quoted_path_fine_tunes_and_evaluates(ws):
    """The fixture fine-tuned from QUOTED; evaluating on it and packing a quoted folder must work too."""
    assert (ws / "tuned" / "heads.json").is_file()
    result = invoke(ws, "evaluate", "tuned", "--task", "classify", "--data", QUOTED)
    assert result.exit_code == 0 and "accuracy: " in result.stdout, result.output
    shutil.copy(ws / "docs.jsonl", ws / "it's docs.jsonl")
    result = invoke(ws, "tokenizer", "pack", "--data", "it's docs.jsonl", "--out", "it's tokens",
                    "--set", "tokenizer=tokenizer")
    assert result.exit_code == 0, result.output
    assert (ws / "it's tokens" / "index.json").is_file()


@pytest.mark.parametrize("entry", [["lmforge"], ["python", "-m", "lmforge"]], ids=" ".join)
def test_real_process_prints_one_line(ws, entry):
    """The installed script and `python -m lmforge`, as a user runs them: same status, same line."""
    program = [str(Path(sys.executable).with_name(entry[0])), *entry[1:]]
    proc = run_bounded([*program, "finetune", "model", "--task", "classify", "--data", "missing.tsv"],
                       cwd=ws, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr == "error: missing.tsv: no such file (expected a TSV file of texts and labels)\n"
