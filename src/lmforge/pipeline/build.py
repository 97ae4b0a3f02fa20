"""The first half of the lifecycle: corpus -> curation -> tokenizer and token shards -> pretraining."""

from __future__ import annotations

import json
from pathlib import Path

from lmforge.artifacts import read_manifest, write_manifest
from lmforge.config import Config, to_dict
from lmforge.data import read_documents, write_documents
from lmforge.data.curate import CurateConfig, CurationSettings, curate
from lmforge.data.synthetic import generate_corpus, truth_scorer
from lmforge.model import generate
from lmforge.model.bundle import load_bundle
from lmforge.pipeline.stages import Outcome, RunContext, complete, read_json
from lmforge.tokenizer import (
    PackConfig,
    PackSettings,
    TokenizerSettings,
    TokenizerTrainConfig,
    run_pack,
    run_train,
)
from lmforge.train import PretrainConfig, pretrain


def corpus_stage(ctx: RunContext) -> Outcome:
    """Your sources as one document file, or the built-in corpus with its truth and task files."""
    settings, dataset = ctx.cfg.corpus, ctx.root / "datasets" / "default"
    if not complete(dataset):
        if settings.sources:
            ctx.say(f"reading {len(settings.sources)} source(s) -> {dataset}")
            write_documents(dataset / "documents.jsonl.gz", read_documents(settings.sources))
        else:
            ctx.say(f"generating the built-in corpus ({settings.size_mb} MB, seed {settings.seed})")
            generate_corpus(dataset, seed=settings.seed, size_mb=settings.size_mb)
        write_manifest(dataset, "corpus", to_dict(settings), parents=settings.sources)
    truth = dataset / "truth.json"
    stats = read_json(truth)["stats"] if truth.is_file() else {}
    figure = (f"{stats['documents']:,} documents, {stats['bytes'] / 1e6:.1f} MB, "
              f"{len(stats['languages'])} languages" if stats else "your sources")
    return Outcome({"dataset": ctx.relative(dataset)}, figure, {"corpus": stats})


def curate_stage(ctx: RunContext) -> Outcome:
    """Clean, filter, deduplicate and anonymise (or pass the corpus through when curation is off)."""
    raw = ctx.path("corpus", "dataset")
    if not ctx.cfg.curation.enabled:
        return Outcome({"dataset": ctx.relative(raw)}, "curation off", {})
    curated = ctx.root / "datasets" / "curated"
    if not complete(curated):
        sources = [raw / "documents.jsonl.gz"]
        curate(CurateConfig(name=ctx.cfg.name, sources=sources, out=curated,
                            **_fields(ctx.cfg.curation, CurationSettings)), say=ctx.say,
               scorer=truth_scorer(sources))
    stats = read_json(curated / "stats.json")
    kept, total = stats["kept_documents"], stats["input_documents"]
    return Outcome({"dataset": ctx.relative(curated)}, f"{kept:,} of {total:,} documents kept",
                   {"kept": kept, "input": total, "removed_by_reason": stats["removed_by_reason"]})


def tokenizer_stage(ctx: RunContext) -> Outcome:
    """Byte-level BPE on the curated text, then the text packed into token shards."""
    dataset = ctx.path("curate", "dataset")
    documents = dataset / ("shards" if ctx.cfg.curation.enabled else "documents.jsonl.gz")
    tokenizer_dir, tokens_dir = ctx.root / "tokenizers" / "default", dataset / "tokens"
    settings = ctx.cfg.tokenizer
    if not complete(tokenizer_dir):
        ctx.say(f"training byte-level BPE (vocab {settings.vocab_size}) -> {tokenizer_dir}")
        run_train(TokenizerTrainConfig(data=[documents], out=tokenizer_dir,
                                       **_fields(settings, TokenizerSettings)))
    if not complete(tokens_dir):
        ctx.say(f"tokenizing into shards -> {tokens_dir}")
        run_pack(PackConfig(data=[documents], tokenizer=tokenizer_dir, out=tokens_dir,
                            **_fields(settings, PackSettings)))
    tokens = read_manifest(tokens_dir)["tokens"]
    return Outcome({"tokenizer": ctx.relative(tokenizer_dir), "tokens": ctx.relative(tokens_dir)},
                   f"vocabulary {settings.vocab_size:,}, {tokens['train']:,} training tokens",
                   {"tokens": tokens})


def pretrain_stage(ctx: RunContext) -> Outcome:
    """The language model on the token shards (resumed from its last checkpoint), then a sample."""
    cfg = ctx.cfg
    model_dir, checkpoints = ctx.root / "models" / cfg.name, ctx.root / "checkpoints" / cfg.name
    if not complete(model_dir):
        ctx.say(f"{cfg.model.preset or 'custom'} model, {cfg.train.steps} steps")
        data = {"tokens": ctx.path("tokenizer", "tokens"), "tokenizer": ctx.path("tokenizer", "tokenizer")}
        train = cfg.train.model_copy(update={"device": cfg.device})
        pretrain(PretrainConfig(name=cfg.name, out=ctx.root, model=cfg.model, data=data, train=train),
                 resume="auto")
    evaluations = [r for r in _jsonl(checkpoints / "metrics.jsonl") if "val_ppl" in r]
    first, last = evaluations[0]["val_ppl"], evaluations[-1]["val_ppl"]
    sample = _sample(ctx)
    return Outcome({"model": ctx.relative(model_dir)},
                   f"validation perplexity {first:,.1f} -> {last:,.2f}",
                   {"ppl_before": first, "ppl_after": last, "steps": evaluations[-1]["step"],
                    "log": ctx.relative(checkpoints / "metrics.jsonl"), "sample": sample})


def _sample(ctx: RunContext) -> str:
    bundle = load_bundle(ctx.root / "models" / ctx.cfg.name)
    ids = bundle.tokenizer.encode(ctx.cfg.sample_prompt).ids
    new = generate(bundle.model, ids, ctx.cfg.sample_tokens, temperature=0.8, top_k=50,
                   seed=ctx.cfg.train.seed, eos_id=bundle.tokenizer.token_to_id("<eos>"))
    return bundle.tokenizer.decode(ids + new)


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _fields(settings: Config, stage: type[Config]) -> dict:
    """The values of `settings` that belong to the stage config `stage` (nested ones stay models)."""
    return {name: getattr(settings, name) for name in stage.model_fields}
