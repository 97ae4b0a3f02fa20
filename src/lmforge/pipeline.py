"""`lmforge run`: the whole lifecycle, stage after stage, through artifact folders.

Stages never call each other in memory: each reads the folder the previous one wrote, so a
re-run skips every stage whose artifact is complete and resumes training where it stopped.
Later issues add their stages (curation, heads, compression, export, serving) here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import Field

from lmforge.artifacts import MANIFEST, run_layout, write_manifest
from lmforge.config import Config, to_dict
from lmforge.data import read_documents, write_documents
from lmforge.data.curate import CurateConfig, CurationSettings, curate
from lmforge.data.synthetic import generate_corpus, truth_scorer
from lmforge.model import ModelConfig, generate
from lmforge.model.bundle import load_bundle
from lmforge.tokenizer import (
    PackConfig,
    PackSettings,
    TokenizerSettings,
    TokenizerTrainConfig,
    run_pack,
    run_train,
)
from lmforge.train import PretrainConfig, PretrainResult, TrainSettings, pretrain


class CorpusSettings(Config):
    sources: list[Path] = []
    """Your own JSONL / .txt files or folders; empty means the built-in synthetic corpus."""
    seed: int = 0
    """Seed of the built-in corpus generator."""
    size_mb: float = Field(3.0, gt=0)
    """Size of the built-in corpus in MB of text."""


class RunTokenizer(TokenizerSettings, PackSettings):
    """The tokenizer stage's and the packing stage's own settings."""


class RunCuration(CurationSettings):
    """The curation stage's own settings, and whether the run curates at all."""

    enabled: bool = True
    """Curate the corpus (clean, filter, dedup, anonymise) before training the tokenizer."""


class RunConfig(Config):
    name: str = "quickstart"
    """Run name: everything goes to ROOT/NAME/."""
    root: Path = Path("runs")
    """Folder holding all runs."""
    corpus: CorpusSettings = CorpusSettings()
    """Where the text comes from."""
    curation: RunCuration = RunCuration()
    """Data curation in front of the tokenizer."""
    tokenizer: RunTokenizer = RunTokenizer()
    """Tokenizer training and packing."""
    model: ModelConfig = ModelConfig(preset="tiny")
    """Architecture of the pretrained model."""
    train: TrainSettings = TrainSettings(steps=600, eval_every=100, checkpoint_every=200)
    """Pretraining settings (600 steps of `tiny` take about two minutes on 2 cores)."""
    sample_prompt: str = "The"
    """Prompt of the sample printed at the end."""
    sample_tokens: int = Field(40, gt=0)
    """Tokens to generate for the sample."""


@dataclass
class RunSummary:
    root: Path
    model_dir: Path
    pretrain: PretrainResult
    sample: str


def run_pipeline(cfg: RunConfig, say=print) -> RunSummary:
    """corpus -> tokenizer -> pack -> pretrain -> model folder -> sample, under ROOT/NAME/."""
    layout = run_layout(cfg.root, cfg.name)
    dataset, tokens_dir = _curated(cfg, layout["datasets"], say)
    tokenizer_dir = layout["tokenizers"] / "default"
    if not (tokenizer_dir / MANIFEST).exists():
        say(f"[tokenizer] training byte-level BPE (vocab {cfg.tokenizer.vocab_size}) -> {tokenizer_dir}")
        run_train(TokenizerTrainConfig(data=[dataset], out=tokenizer_dir,
                                       **_fields(cfg.tokenizer, TokenizerSettings)))
    if not (tokens_dir / MANIFEST).exists():
        say(f"[pack] tokenizing into shards -> {tokens_dir}")
        run_pack(PackConfig(data=[dataset], tokenizer=tokenizer_dir, out=tokens_dir,
                            **_fields(cfg.tokenizer, PackSettings)))
    say(f"[pretrain] {cfg.model.preset or 'custom'} model, {cfg.train.steps} steps")
    result = pretrain(PretrainConfig(name=cfg.name, out=layout["root"], model=cfg.model,
                                     data={"tokens": tokens_dir, "tokenizer": tokenizer_dir},
                                     train=cfg.train), resume="auto")
    sample = _sample(result.model_dir, cfg.sample_prompt, cfg.sample_tokens, cfg.train.seed)
    write_manifest(layout["root"], "run", to_dict(cfg), parents=[result.model_dir],
                   extra={"ppl_before": result.ppl_before, "ppl_after": result.ppl_after})
    return RunSummary(layout["root"], result.model_dir, result, sample)


def _curated(cfg: RunConfig, datasets: Path, say) -> tuple[Path, Path]:
    """The corpus, curated unless curation is off: (documents to train on, their token folder)."""
    raw = datasets / "default"
    _corpus(cfg.corpus, raw, say)
    if not cfg.curation.enabled:
        return raw / "documents.jsonl.gz", raw / "tokens"
    curated = datasets / "curated"
    if not (curated / MANIFEST).exists():
        say(f"[curate] cleaning, filtering, deduplicating and anonymising -> {curated}")
        sources = [raw / "documents.jsonl.gz"]
        result = curate(CurateConfig(name=cfg.name, sources=sources, out=curated,
                                     **_fields(cfg.curation, CurationSettings)), say=say,
                        scorer=truth_scorer(sources))
        say(f"[curate] {result.n_kept:,} of {result.n_input:,} documents kept; see {curated / 'report.md'}")
    return curated / "shards", curated / "tokens"


def _fields(settings: Config, stage: type[Config]) -> dict:
    """The values of `settings` that belong to the stage config `stage` (nested ones stay models)."""
    return {name: getattr(settings, name) for name in stage.model_fields}


def _corpus(settings: CorpusSettings, dataset: Path, say) -> None:
    if (dataset / MANIFEST).exists():
        return
    if settings.sources:
        say(f"[corpus] reading {len(settings.sources)} source(s) -> {dataset}")
        write_documents(dataset / "documents.jsonl.gz", read_documents(settings.sources))
    else:
        say(f"[corpus] generating the built-in corpus ({settings.size_mb} MB, seed {settings.seed})")
        generate_corpus(dataset, seed=settings.seed, size_mb=settings.size_mb)
    write_manifest(dataset, "corpus", to_dict(settings), parents=settings.sources)


def _sample(model_dir: Path, prompt: str, max_tokens: int, seed: int) -> str:
    bundle = load_bundle(model_dir)
    tokenizer = bundle.tokenizer
    ids = tokenizer.encode(prompt).ids
    new = generate(bundle.model, ids, max_tokens, temperature=0.8, top_k=50, seed=seed,
                   eos_id=tokenizer.token_to_id("<eos>"))
    return tokenizer.decode(ids + new)
