"""The built-in default corpus: a few MB of multilingual text with planted, documented defects.

Every later stage needs data whose right answers are known: curation must find the planted
duplicates, PII, boilerplate and junk; fine-tuning needs labelled sentences. So the generator
writes, next to the documents, the truth about each of them. Same seed, same bytes.

Files written into `out_dir`:
- `documents.jsonl.gz`: one document per line, `{"id", "text", "source": "synthetic", "metadata": {}}`.
  Originals always come before their duplicates, so "keep the first copy" matches the truth.
- `truth.json`: `{"seed", "stats", "documents": [...]}`, one record per document, in the same
  order and one per line (it is not .jsonl, so that the folder can be read as a dataset):
  `{"id", "lang", "kind", "defect", "label", "exact_dup_of", "near_dup_of", "near_dup_jaccard",
  "pii": [{"type", "start", "end", "value"}], "entities": [{"type", "start", "end", "text"}]}`.
  kind is normal | boilerplate | low_quality; defect (low_quality only) is repeated_lines |
  symbol_soup | too_short; label is the topic (sports | finance | tech | health) of normal
  documents; lang is None for symbol soup. PII types: person, email, phone, ipv4, ipv6, card;
  entity types: PER, ORG, LOC. Offsets index the Python string (code points), end exclusive.
  A duplicate has the kind and label of its original; near_dup_jaccard is the Jaccard
  similarity of the very shingles near-dedup hashes by default (5-word shingles of
  `lmforge.data.curate.dedup.minhash.shingles`; character 5-grams in Chinese), so the truth
  states the similarity that MinHash estimates and the LSH S-curve applies to.
- `classification.tsv`: header `text\tlabel`, the first paragraph of every original normal document.
- `ner.conll`: `token\tBIO-tag` per line, a blank line after each sentence; every sentence of an
  original normal document that names a PER, ORG or LOC. Tokens are `lmforge.data.text.tokens`:
  the words every data step counts (one per character in Chinese), and each punctuation mark.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from lmforge.artifacts import atomic_write_text
from lmforge.data.curate.dedup.minhash import shingles
from lmforge.data.documents import write_documents
from lmforge.data.synthetic.lexicon import LEXICONS, TOPICS, Lexicon
from lmforge.data.synthetic.sentences import ENTITY_SLOTS, PII_SLOTS, Filler, Sentence, Spans, edit
from lmforge.data.text import count_words, tokens

LANG_WEIGHTS = {"en": 0.3, "de": 0.175, "fr": 0.175, "es": 0.175, "zh": 0.175}
KIND_WEIGHTS = {"normal": 0.8, "exact_dup": 0.04, "near_dup": 0.05, "boilerplate": 0.05, "low_quality": 0.06}
SYMBOLS = "#$%&*+=<>~^|/\\@!?{}[]0123456789 "
MIN_NEAR_DUP_WORDS = 100
"""Shorter originals would jump past the target similarity with a single edit."""


@dataclass
class _Doc:
    id: str
    lang: str | None
    kind: str
    blocks: list[list[Sentence]]
    """Paragraphs of sentences (normal documents) or single-sentence lines (the others)."""
    joiner: str
    block_sep: str
    label: str | None = None
    defect: str | None = None
    exact_dup_of: str | None = None
    near_dup_of: str | None = None
    near_dup_jaccard: float | None = None

    @cached_property
    def rendered(self) -> tuple[str, Spans]:
        """The text, and every span shifted to document offsets."""
        return _render(self.blocks, self.joiner, self.block_sep)


def generate_corpus(out_dir: Path, seed: int = 0, size_mb: float = 3.0) -> dict[str, Any]:
    """Write the corpus files described above (size_mb million bytes of UTF-8 text); return stats."""
    out_dir = Path(out_dir)
    docs = _generate(random.Random(seed), int(size_mb * 1_000_000))
    records = ({"id": d.id, "text": d.rendered[0], "source": "synthetic", "metadata": {}} for d in docs)
    write_documents(out_dir / "documents.jsonl.gz", records)
    originals = [d for d in docs if d.kind == "normal" and not (d.exact_dup_of or d.near_dup_of)]
    rows = [d.joiner.join(s.text for s in d.blocks[0]) + f"\t{d.label}\n" for d in originals]
    atomic_write_text(out_dir / "classification.tsv", "text\tlabel\n" + "".join(rows))
    ner = [_conll(s) for d in originals for block in d.blocks for s in block
           if any(slot in ENTITY_SLOTS for _, _, slot in s.spans)]
    atomic_write_text(out_dir / "ner.conll", "".join(ner))
    truth = [_truth(doc) for doc in docs]
    stats = _stats(docs, truth, classification_rows=len(rows), ner_sentences=len(ner))
    _write_truth(out_dir / "truth.json", seed, stats, truth)
    return stats


def _generate(rng: random.Random, target_bytes: int) -> list[_Doc]:
    docs: list[_Doc] = []
    sources: list[_Doc] = []
    near_sources: list[_Doc] = []
    size = 0
    while size < target_bytes:
        doc_id = f"doc-{len(docs):06d}"
        kind = rng.choices(list(KIND_WEIGHTS), weights=list(KIND_WEIGHTS.values()))[0]
        lex = LEXICONS[rng.choices(list(LANG_WEIGHTS), weights=list(LANG_WEIGHTS.values()))[0]]
        if kind == "exact_dup" and sources:
            original = rng.choice(sources)
            doc = replace(original, id=doc_id, exact_dup_of=original.id)
        elif kind == "near_dup" and near_sources:
            doc = _near_duplicate(rng, rng.choice(near_sources), doc_id)
        elif kind == "boilerplate":
            doc = _boilerplate(rng, lex, doc_id)
        elif kind == "low_quality":
            doc = _low_quality(rng, lex, doc_id)
        else:
            doc = _normal(rng, lex, doc_id)
            sources.append(doc)
            if count_words(doc.rendered[0]) >= MIN_NEAR_DUP_WORDS:
                near_sources.append(doc)
        docs.append(doc)
        size += len(doc.rendered[0].encode("utf-8"))
    return docs


def _normal(rng: random.Random, lex: Lexicon, doc_id: str) -> _Doc:
    """A news-like article on one topic; one in ten sentences carries contact or payment PII,
    and one document in twenty is longer than the 512-word default length limit."""
    label = rng.choice(TOPICS)
    fill = Filler(rng, lex, lex.topics[label])
    n = rng.randint(45, 70) if rng.random() < 0.05 else rng.randint(4, 24)
    sentences = [fill.render(rng.choice(lex.pii if rng.random() < 0.1 else lex.sentences)) for _ in range(n)]
    blocks = []
    while sentences:
        k = rng.randint(2, 5)
        blocks.append(sentences[:k])
        sentences = sentences[k:]
    return _Doc(doc_id, lex.lang, "normal", blocks, lex.joiner, "\n\n", label=label)


def _near_duplicate(rng: random.Random, original: _Doc, doc_id: str) -> _Doc:
    """Copy `original` and edit random words until its shingle similarity drops below a target
    drawn from [0.80, 0.92]; the edits avoid entity and PII spans, which move with the text."""
    lex = LEXICONS[str(original.lang)]
    blocks = [list(block) for block in original.blocks]
    base = shingles(original.rendered[0])
    target = rng.uniform(0.80, 0.92)
    similarity = 1.0
    for _ in range(len(base)):
        if similarity <= target:
            break
        block = rng.choice(blocks)
        k = rng.randrange(len(block))
        block[k] = edit(block[k], rng, lex)
        edited = shingles(_render(blocks, original.joiner, original.block_sep)[0])
        similarity = len(base & edited) / len(base | edited)
    return replace(original, id=doc_id, blocks=blocks, near_dup_of=original.id,
                   near_dup_jaccard=round(similarity, 4))


def _boilerplate(rng: random.Random, lex: Lexicon, doc_id: str) -> _Doc:
    """A scraped page with no article: navigation (repeated), cookie banner, footer."""
    fill = Filler(rng, lex, lex.topics[rng.choice(TOPICS)])
    menu = Sentence(" | ".join(rng.sample(lex.menu, rng.randint(5, len(lex.menu)))))
    lines = [menu, Sentence(lex.cookie), Sentence(" | ".join(lex.buttons))]
    lines += [fill.render(t) for t in rng.sample(lex.footer, rng.randint(2, len(lex.footer)))]
    lines += [menu] * rng.randint(1, 3)
    return _Doc(doc_id, lex.lang, "boilerplate", [[line] for line in lines], lex.joiner, "\n")


def _low_quality(rng: random.Random, lex: Lexicon, doc_id: str) -> _Doc:
    """Junk that Gopher/C4-style heuristics should remove: one of the three defects."""
    defect = rng.choice(("repeated_lines", "symbol_soup", "too_short"))
    fill = Filler(rng, lex, lex.topics[rng.choice(TOPICS)])
    lang: str | None = lex.lang
    if defect == "repeated_lines":
        lines = [fill.render(rng.choice(lex.sentences))] * rng.randint(8, 30)
    elif defect == "symbol_soup":
        soup = ("".join(rng.choices(SYMBOLS, k=rng.randint(20, 80))) for _ in range(rng.randint(3, 12)))
        lines = [Sentence(line) for line in soup]
        lang = None
    else:
        lines = [Sentence(rng.choice(lex.menu + fill.topic.objects))]
    return _Doc(doc_id, lang, "low_quality", [[line] for line in lines], lex.joiner, "\n", defect=defect)


def _render(blocks: list[list[Sentence]], joiner: str, block_sep: str) -> tuple[str, Spans]:
    pieces: list[str] = []
    spans: Spans = []
    pos = 0
    for b, block in enumerate(blocks):
        for s, sentence in enumerate(block):
            if b or s:
                glue = joiner if s else block_sep
                pieces.append(glue)
                pos += len(glue)
            spans.extend((pos + start, pos + end, slot) for start, end, slot in sentence.spans)
            pieces.append(sentence.text)
            pos += len(sentence.text)
    return "".join(pieces), spans


def _truth(doc: _Doc) -> dict[str, Any]:
    text, spans = doc.rendered
    return {
        "id": doc.id, "lang": doc.lang, "kind": doc.kind, "defect": doc.defect, "label": doc.label,
        "exact_dup_of": doc.exact_dup_of, "near_dup_of": doc.near_dup_of,
        "near_dup_jaccard": doc.near_dup_jaccard,
        "pii": [{"type": PII_SLOTS[slot], "start": a, "end": b, "value": text[a:b]}
                for a, b, slot in spans if slot in PII_SLOTS],
        "entities": [{"type": ENTITY_SLOTS[slot], "start": a, "end": b, "text": text[a:b]}
                     for a, b, slot in spans if slot in ENTITY_SLOTS],
    }


def _write_truth(path: Path, seed: int, stats: dict[str, Any], truth: list[dict[str, Any]]) -> None:
    """Plain JSON, but one document record per line, so that grep and diff stay useful."""
    body = ",\n".join(json.dumps(t, ensure_ascii=False) for t in truth)
    head = f'{{"seed": {seed}, "stats": {json.dumps(stats)},\n"documents": [\n'
    atomic_write_text(path, head + body + "\n]}\n")


def _conll(sentence: Sentence) -> str:
    """One sentence as CoNLL lines; a token inside an entity span is B- at its start, I- after."""
    lines = []
    for token, at in tokens(sentence.text):
        tag = "O"
        for start, end, slot in sentence.spans:
            if slot in ENTITY_SLOTS and start <= at < end:
                tag = ("B-" if at == start else "I-") + ENTITY_SLOTS[slot]
        lines.append(f"{token}\t{tag}\n")
    return "".join(lines) + "\n"


def _stats(docs: list[_Doc], truth: list[dict[str, Any]], **extra: int) -> dict[str, Any]:
    def count(values: Any) -> dict[str, int]:
        return dict(sorted(Counter(v for v in values if v is not None).items()))

    return {
        "documents": len(docs),
        "bytes": sum(len(d.rendered[0].encode("utf-8")) for d in docs),
        "languages": count(t["lang"] for t in truth),
        "kinds": count(t["kind"] for t in truth),
        "defects": count(t["defect"] for t in truth),
        "labels": count(t["label"] for t in truth),
        "exact_dups": sum(t["exact_dup_of"] is not None for t in truth),
        "near_dups": sum(t["near_dup_of"] is not None for t in truth),
        "pii": count(p["type"] for t in truth for p in t["pii"]),
        "entities": count(e["type"] for t in truth for e in t["entities"]),
        **extra,
    }
