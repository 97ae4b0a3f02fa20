"""The README is executable: every command of its ```bash blocks runs, at tiny settings.

The commands run in document order in one folder laid out like the repository root: `configs/`,
the README's YAML files (`joint.yaml`), and a `data/` of small real texts for "your own data";
`../shared/data` is replaced by a copy of the shared datasets (`$LMFORGE_DATA`) that the README
names, each cut to its first lines. How each program runs:
- `lmforge`: in-process (a subprocess would import torch every time), with TINY's `--set`
  overrides appended so each stage takes seconds;
- `make`: `make -n TARGET`, which proves the target exists without installing or running for
  hours (what `make demo` runs, `lmforge run`, is the stand-in below);
- `torchrun`: for real, with the multi-node placeholders filled in for one node of one process.
Commands that read `runs/quickstart/` (what `make demo` leaves) are marked `demo_artifacts` and
get a stand-in built once: `lmforge run` at tiny settings, up to pretraining (later stages' README
commands make what they read; tests/integration/test_lifecycle.py runs all of `lmforge run`).
A wrong flag or path in the README fails its command's test, as `test_a_wrong_flag_or_path_fails`
shows on a changed copy.
"""

from __future__ import annotations

import gzip
import json
import re
import shlex
import shutil
import sys
import traceback
from pathlib import Path

import pytest
from processes import free_port, run_bounded
from typer.testing import CliRunner

from lmforge.cli import app

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text(encoding="utf-8")
SHARED = "../shared/data"
"""How the README names the shared datasets (relative to the repository root)."""
MODEL = ("--set model.d_model=32 --set model.d_ff=64 --set model.seq_len=16 --set model.mem_len=16 "
         "--set train.peak_gflops=100 --set train.eval_segments=1")
TINY = {  # verb -> overrides appended to the README's command
    "run": "--set corpus.size_mb=0.15 --set tokenizer.vocab_size=400 --set curation.workers=1 "
           "--set train.steps=4 --set train.batch_size=4 --set train.eval_every=4 "
           "--set train.checkpoint_every=4 --set sample_tokens=4 --set stop_after=pretrain " + MODEL,
    "tokenizer train": "--set vocab_size=400",
    "pretrain": "--set train.steps=2 --set train.batch_size=16 --set train.eval_every=2 "
                "--set train.checkpoint_every=2 " + MODEL,
    "finetune": "--set steps=2 --set batch_size=4 --set eval_every=2 --set max_len=16",
    "multitask": "--set steps=2 --set batch_size=4 --set eval_every=2 --set max_len=16",
    "generate": "--max-tokens 4",
    "quantize": "--set qat_steps=2 --set samples=8",
    "distill": "--set steps=2 --set batch_size=4 --set eval_every=2",
    "prune": "--steps 2 --set batch_size=4 --set importance_batches=1",
    "compress-report": "--rounds 1",
    "serve": "--device cpu",
}
HEAD_LINES = 1000
"""Lines kept of each shared dataset the README names."""
ONE_NODE = {"--nnodes": "1", "--node-rank": "0", "--nproc-per-node": "1"}
"""torchrun's multi-node flags, as one node of one process runs them."""


def bash_commands(markdown: str) -> list[list[str]]:
    """Every command of the ```bash blocks as argv: continuation lines joined, comments dropped."""
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", markdown, flags=re.M | re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if words := shlex.split(line, comments=True):
                commands.append(words)
    return commands


def yaml_files(markdown: str) -> dict[str, str]:
    """The ```yaml blocks whose introducing line names a file (where `joint.yaml` lists ...)."""
    return dict(re.findall(r"`([\w.-]+\.yaml)`[^\n]*\n```yaml\n(.*?)^```", markdown, flags=re.M | re.S))


def tiny(words: list[str]) -> list[str]:
    """The lmforge arguments with the verb's TINY overrides appended."""
    verb = next((v for v in TINY if words[:len(v.split())] == v.split()), None)
    return words + shlex.split(TINY[verb]) if verb else words


def needs_demo(words: list[str]) -> bool:
    """Whether a command reads runs/quickstart/: by name, or through a file it names (a config
    in configs/, a YAML file of the README) that does."""
    texts = [*words, *(YAML_FILES[word] for word in words if word in YAML_FILES),
             *((REPO / word).read_text(encoding="utf-8") for word in words if (REPO / word).is_file())]
    return any("runs/quickstart" in text for text in texts)


def run_command(words: list[str], cwd: Path, data: Path) -> tuple[int, str]:
    """Run one README command in `cwd` at tiny settings: (exit status, output to show on failure)."""
    words = [word.replace(SHARED, str(data)) for word in words]
    if words[0] == "lmforge":
        return invoke(cwd, tiny(words[1:]))
    if words[0] == "make":
        argv = ["make", "-n", *words[1:]]
    elif words[0] == "torchrun":
        argv = [str(Path(sys.executable).with_name("torchrun")), *one_node(words[1:])]
    else:
        raise AssertionError(f"the README runs {words[0]!r}; teach test_readme.py how to run it")
    proc = run_bounded(argv, cwd=REPO if words[0] == "make" else cwd, capture_output=True, text=True,
                       timeout=300)
    return proc.returncode, proc.stdout[-3000:] + proc.stderr[-3000:]


def invoke(cwd: Path, args: list[str]) -> tuple[int, str]:
    """`lmforge ARGS` in-process in `cwd`; a traceback is part of the output."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        result = CliRunner().invoke(app, args)
    output = result.stdout[-3000:] + result.stderr[-3000:]
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        output += "".join(traceback.format_exception(result.exception))
    return result.exit_code, output


def one_node(args: list[str]) -> list[str]:
    """torchrun's arguments for one node of one process: ONE_NODE's values, a free local port."""
    fixed = {**ONE_NODE, "--rdzv-endpoint": f"127.0.0.1:{free_port()}"}
    return [fixed.get(args[i - 1], arg) if i else arg for i, arg in enumerate(args)]


@pytest.fixture(scope="module")
def data(tmp_path_factory, shared_data) -> Path:
    """The shared datasets the README names, each cut to its first HEAD_LINES lines (CoNLL: to the
    end of that sentence): real data, at the size of a test."""
    root = tmp_path_factory.mktemp("data")
    for name in set(re.findall(rf"{SHARED}/([\w./-]+)", README)):
        lines = (shared_data / name).read_text(encoding="utf-8").splitlines(keepends=True)
        keep = HEAD_LINES
        while name.endswith(".conll") and keep < len(lines) and lines[keep].strip():
            keep += 1
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("".join(lines[:keep]), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def ws(tmp_path_factory, shared_data, data) -> Path:
    """A folder like the repository root, with `data/` holding small real texts for "your own data"."""
    root = tmp_path_factory.mktemp("readme")
    shutil.copytree(REPO / "configs", root / "configs")
    for name, text in YAML_FILES.items():
        (root / name).write_text(text.replace(SHARED, str(data)))
    wiki = (shared_data / "wikitext2" / "raw" / "wiki.test.raw").read_text(encoding="utf-8")
    paragraphs = [p.strip() for p in wiki.splitlines() if len(p.strip()) > 200][:120]
    (root / "data").mkdir()
    with gzip.open(root / "data" / "my.jsonl.gz", "wt", encoding="utf-8") as out:
        out.writelines(json.dumps({"text": p}) + "\n" for p in paragraphs)
    shakespeare = (shared_data / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    (root / "data" / "txt_folder").mkdir()
    for i in range(2):
        (root / "data" / "txt_folder" / f"part{i}.txt").write_text(shakespeare[i * 20_000:(i + 1) * 20_000])
    return root


@pytest.fixture(scope="module")
def demo_standin(ws, data) -> Path:
    """What `make demo` leaves in runs/quickstart/, at tiny settings: `lmforge run`, its recipe."""
    status, output = run_command(["lmforge", "run"], ws, data)
    assert status == 0, output
    return ws / "runs" / "quickstart"


COMMANDS = bash_commands(README)
YAML_FILES = yaml_files(README)


@pytest.mark.parametrize("words", [
    pytest.param(words, id=f"{i:02d} {shlex.join(words)[:50]}",
                 marks=[pytest.mark.demo_artifacts] if needs_demo(words) else [])
    for i, words in enumerate(COMMANDS)])
def test_readme_command_runs(words, ws, data, request):
    if request.node.get_closest_marker("demo_artifacts"):
        request.getfixturevalue("demo_standin")
    status, output = run_command(words, ws, data)
    assert status == 0, f"{shlex.join(words)} exited with {status}:\n{output}"


def test_readme_has_commands_for_every_stage():
    """A broken extractor must not pass by finding nothing."""
    verbs = {" ".join(words[:2]) for words in COMMANDS}
    assert {"make demo", "lmforge run", "lmforge pretrain", "lmforge finetune", "lmforge generate",
            "lmforge multitask", "lmforge evaluate", "torchrun --nnodes"} <= verbs
    assert set(YAML_FILES) == {"joint.yaml", "ab.yaml"}


def test_extractor_joins_continuations_and_drops_comments():
    text = ("x\n```bash\nlmforge a --b 'c d' \\\n    --e f   # note\n# only a comment\n```\n"
            "```\nnot bash\n```\n")
    assert bash_commands(text) == [["lmforge", "a", "--b", "c d", "--e", "f"]]


@pytest.mark.parametrize(("right", "wrong", "status"), [
    ("--world 4", "--worlds 4", 2),  # an unknown flag: click's usage error
    ("configs/pretrain/small.yaml --world", "configs/pretrain/smal.yaml --world", 1),  # a wrong path
])
def test_a_wrong_flag_or_path_fails(ws, data, right, wrong, status):
    """The runner fails a command that is wrong in a changed copy of the README."""
    changed = [words for words in bash_commands(README.replace(right, wrong))
               if words[1:3] == ["parallel", "plan"]]
    assert len(changed) == 1
    assert run_command(changed[0], ws, data)[0] == status
