"""Augmentation: EDA edits, WordNet, masked-LM proposals, Marian back-translation, the augment step."""

from __future__ import annotations

import io
import json
import random
import re
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from lmforge.data.augment import (
    MarianTranslator,
    MaskedLMProposer,
    WordNetMissing,
    WordNetSynonyms,
    back_translate,
    random_deletion,
    random_insertion,
    random_swap,
    synonym_replacement,
)
from lmforge.data.curate.shards import run_steps
from lmforge.data.curate.steps import StepSettings, finishing_steps
from lmforge.data.text import words

TEXT = "The quick brown fox jumps over the lazy dog, and then it sleeps.\n" * 10
"""130 words; a line break and punctuation that the edits must leave alone."""
MARIAN_MAX_LENGTH = 12
"""Tokens in and out of the tiny Marian models: random weights never stop on their own."""


def ish(text: str, spans: list[tuple[int, int]]) -> list[list[str]]:
    """A proposer that marks its replacement, and has none for 'the' (as WordNet for function words)."""
    return [[] if text[a:b].lower() == "the" else [text[a:b].lower() + "ish"] for a, b in spans]


def skeleton(text: str) -> str:
    return re.sub(r"\w+", "w", text)


@pytest.mark.parametrize("op", [synonym_replacement, random_insertion])
def test_word_ops_are_seeded_and_change_alpha_of_the_words(op):
    out = op(TEXT, random.Random(1), 0.1, ish)
    assert out == op(TEXT, random.Random(1), 0.1, ish) != op(TEXT, random.Random(2), 0.1, ish)
    assert sum(w.endswith("ish") for w in words(out)) == 13  # int(0.1 * 130), 'the' made up for
    if op is synonym_replacement:
        assert skeleton(out) == skeleton(TEXT)
        assert not any(w in ("Theish", "theish") for w in words(out))
    else:
        assert len(words(out)) == 130 + 13


def test_swap_and_deletion_are_seeded_and_change_about_alpha_of_the_words():
    swapped = random_swap(TEXT, random.Random(1), 0.1)
    assert swapped == random_swap(TEXT, random.Random(1), 0.1) != TEXT
    assert sorted(words(swapped)) == sorted(words(TEXT)) and skeleton(swapped) == skeleton(TEXT)
    assert 0 < sum(a != b for a, b in zip(words(swapped), words(TEXT), strict=True)) <= 2 * 13

    long_text = TEXT * 10
    deleted = random_deletion(long_text, random.Random(1), 0.1)
    assert deleted == random_deletion(long_text, random.Random(1), 0.1)
    assert 1300 - 1300 * 0.1 * 1.5 < len(words(deleted)) < 1300 - 1300 * 0.1 * 0.5
    assert "  " not in deleted  # a deleted word takes its following space with it
    assert random_deletion("Hello", random.Random(1), 1.0) == "Hello"  # never deletes every word


def test_back_translate_goes_through_the_pivot_sentence_by_sentence_and_keeps_breaks():
    class Tagger:
        def __init__(self) -> None:
            self.calls: list[tuple[int, str, str]] = []

        def translate(self, texts: list[str], src: str, tgt: str) -> list[str]:
            self.calls.append((len(texts), src, tgt))
            return [f"{t}|{tgt}" for t in texts]

    tagger = Tagger()
    out = back_translate(["One. Two!\n\nThree", "", "Four?"], tagger, "en", "de")
    assert out == ["One.|de|en Two!|de|en\n\nThree|de|en", "", "Four?|de|en"]
    assert tagger.calls == [(4, "en", "de"), (4, "de", "en")]  # one batch per direction


def test_wordnet_source_says_clearly_that_no_wordnet_is_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "nltk", None)  # as on a machine without nltk
    with pytest.raises(WordNetMissing, match="no WordNet installed: the nltk package is missing"):
        WordNetSynonyms()


def test_wordnet_synonyms_skip_function_words_and_other_languages(monkeypatch):
    synsets = {"happy": [["happy", "felicitous"], ["glad", "happy"], ["well-chosen"]], "in": [["inch", "in"]],
               "car": [["car", "auto", "motor_vehicle"]]}
    wordnet = SimpleNamespace(get_version=lambda: "3.0", synsets=lambda word: [
        SimpleNamespace(lemmas=lambda names=names: [SimpleNamespace(name=lambda n=n: n) for n in names])
        for names in synsets.get(word.lower(), [])])
    monkeypatch.setitem(sys.modules, "nltk", SimpleNamespace())
    monkeypatch.setitem(sys.modules, "nltk.corpus", SimpleNamespace(wordnet=wordnet))
    source = WordNetSynonyms()
    assert source.synonyms("Happy", "en") == ["felicitous", "glad", "well-chosen"]
    assert source.synonyms("car", "en") == ["auto", "motor vehicle"]
    assert source.synonyms("in", "en") == [] and source.synonyms("car", "de") == []


def test_installed_wordnet_gives_synonyms():
    try:
        source = WordNetSynonyms()
    except WordNetMissing as err:
        pytest.skip(str(err))  # names the missing package or data
    assert {"glad", "felicitous"} <= set(source.synonyms("happy", "en"))
    assert source.synonyms("in", "en") == [] and source.synonyms("happy", "de") == []


@pytest.fixture(scope="module")
def tatoeba(shared_data: Path) -> dict[str, list[str]]:
    folder = shared_data / "parallel_tatoeba"
    return {lang: (folder / f"tatoeba.deu-eng.{lang}").read_text(encoding="utf-8").splitlines()
            for lang in ("eng", "deu")}


@pytest.fixture(scope="module")
def mlm_folder(tmp_path_factory, tatoeba) -> Path:
    """An untrained masked LM with a tokenizer learned from 400 English sentences."""
    import torch

    from lmforge.model import ModelConfig, Transformer
    from lmforge.model.folder import save_model_folder
    from lmforge.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("mlm")
    tokenizer = train_tokenizer(tatoeba["eng"][:400], vocab_size=600, show_progress=False)
    tokenizer.save(str(root / "tokenizer.json"))
    # Absolute positions: a window longer than seq_len + mem_len would be an error, not silently fine.
    config = ModelConfig(preset="tiny", d_model=32, n_heads=2, d_ff=64, position="absolute",
                         vocab_size=tokenizer.get_vocab_size())
    torch.manual_seed(0)
    return save_model_folder(root / "model", Transformer(config), config, root / "tokenizer.json", heads={})


def test_masked_lm_proposes_whole_vocabulary_words_never_the_masked_one(mlm_folder, tatoeba):
    from tokenizers import Tokenizer

    vocab = Tokenizer.from_file(str(mlm_folder / "tokenizer.json")).get_vocab()
    proposer = MaskedLMProposer(mlm_folder, top_k=len(vocab))  # every token: the original is among them
    text = " ".join(tatoeba["eng"][:30])  # far longer than the model's 64-token segment
    spans = [m.span() for m in re.finditer(r"[A-Za-z]+", text)][::7]
    proposals = proposer(text, spans)
    assert len(proposals) == len(spans) and all(proposals)
    for (a, b), candidates in zip(spans, proposals, strict=True):
        prefix = "Ġ" if a > 0 and text[a - 1] == " " else ""
        assert all(c.isalpha() and prefix + c in vocab for c in candidates)
        assert text[a:b].casefold() not in {c.casefold() for c in candidates}
    assert proposer(text, spans) == proposals


@pytest.fixture(scope="module")
def marian_folders(tmp_path_factory, tatoeba) -> dict[str, Path]:
    """Tiny random MarianMT models en->de and de->en with sentencepiece models learned here."""
    spm = pytest.importorskip("sentencepiece")
    transformers = pytest.importorskip("transformers")
    import torch

    root = tmp_path_factory.mktemp("marian")
    pieces = {}
    for lang, lines in (("en", tatoeba["eng"]), ("de", tatoeba["deu"])):
        buffer = io.BytesIO()
        spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=buffer, vocab_size=300,
                                       character_coverage=1.0, minloglevel=2)
        pieces[lang] = buffer.getvalue()
    vocab = {"</s>": 0, "<unk>": 1, "<pad>": 2}  # one vocabulary for both sides, as opus-mt models
    for proto in pieces.values():
        processor = spm.SentencePieceProcessor(model_proto=proto)
        for i in range(processor.get_piece_size()):
            vocab.setdefault(processor.id_to_piece(i), len(vocab))
    folders = {}
    for seed, (src, tgt) in enumerate((("en", "de"), ("de", "en"))):
        folder = folders[f"{src}-{tgt}"] = root / f"{src}-{tgt}"
        folder.mkdir()
        (folder / "source.spm").write_bytes(pieces[src])
        (folder / "target.spm").write_bytes(pieces[tgt])
        (folder / "vocab.json").write_text(json.dumps(vocab))
        tokenizer = transformers.MarianTokenizer(str(folder / "source.spm"), str(folder / "target.spm"),
                                                 str(folder / "vocab.json"))
        config = transformers.MarianConfig(
            vocab_size=len(vocab), d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
            decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=64,
            pad_token_id=2, eos_token_id=0, decoder_start_token_id=2)
        torch.manual_seed(seed)
        transformers.MarianMTModel(config).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    return folders


@pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")
def test_marian_back_translation_round_trips_tatoeba_greedily(marian_folders, tatoeba):
    batch = tatoeba["eng"][:12]
    translator = MarianTranslator(marian_folders, batch_size=5, max_length=MARIAN_MAX_LENGTH)
    out = back_translate(batch, translator, "en", "de")
    assert len(out) == len(batch) and all(isinstance(t, str) and t for t in out)
    assert out != batch
    fresh = MarianTranslator(marian_folders, max_length=MARIAN_MAX_LENGTH)
    assert back_translate(batch, fresh, "en", "de") == out
    with pytest.raises(KeyError, match="no Marian model for en-fr; have de-en, en-de"):
        translator.translate(batch, "en", "fr")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        MarianTranslator({"en-de": "nowhere"})


def _augment_settings(mlm_folder: Path, marian_folders: dict[str, Path]) -> StepSettings:
    return StepSettings(augment={
        "enabled": True, "methods": ["eda", "back_translation"], "synonyms": "mlm", "mlm_model": mlm_folder,
        "mlm_top_k": 50, "translation_models": marian_folders, "max_length": MARIAN_MAX_LENGTH})


@pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")
def test_augment_step_keeps_originals_and_adds_marked_copies(mlm_folder, marian_folders, tatoeba):
    docs = [{"id": f"t{k}", "text": " ".join(tatoeba["eng"][5 * k:5 * k + 5]), "source": "tatoeba",
             "metadata": {"lang": "en"}} for k in range(6)]
    docs.append({"id": "fr", "text": "Je ne sais pas où il est allé hier soir.", "source": "x",
                 "metadata": {"lang": "fr"}})
    steps = finishing_steps(_augment_settings(mlm_folder, marian_folders), decisions={})
    assert [s.name for s in steps] == ["dedup", "pii", "length", "augment"]
    kept, removed, stats = run_steps(docs, steps)

    originals = [d for d in kept if "augmented_from" not in d["metadata"]]
    assert [d["id"] for d in originals] == [d["id"] for d in docs] and not removed
    copies = [d for d in kept if "augmented_from" in d["metadata"]]
    for doc in docs:
        mine = [c for c in copies if c["metadata"]["augmented_from"] == doc["id"]]
        assert [c["id"] for c in mine] == [f"{doc['id']}~aug{k}" for k in range(len(mine))]
        assert all(c["text"] != doc["text"] and c["metadata"]["lang"] == doc["metadata"]["lang"]
                   for c in mine)
    methods = Counter(c["metadata"]["augmentation"] for c in copies)
    assert set(methods) == {"synonym_replacement", "random_insertion", "random_swap", "random_deletion",
                            "back_translation"}
    assert methods["back_translation"] == 6  # not the French one: there is no fr<->de model
    counters = stats[-1].counters
    assert {m: counters[m] for m in methods} == dict(methods) and counters["back_translation_no_model"] == 1
    assert run_steps(docs, finishing_steps(_augment_settings(mlm_folder, marian_folders), {}))[0] == kept


def test_augmentation_is_off_by_default_and_checks_its_models_before_work(tmp_path):
    assert [s.name for s in finishing_steps(StepSettings(), {})] == ["dedup", "pii", "length"]
    with pytest.raises(ValidationError, match="back_translation needs translation_models"):
        StepSettings(augment={"enabled": True, "methods": ["back_translation"]})
    with pytest.raises(ValidationError, match="synonyms: mlm needs mlm_model"):
        StepSettings(augment={"enabled": True, "synonyms": "mlm"})
    with pytest.raises(ValidationError, match="model folders not found"):
        StepSettings(augment={"enabled": True, "synonyms": "mlm", "mlm_model": tmp_path / "none"})
