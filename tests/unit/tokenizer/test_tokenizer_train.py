"""Byte-level BPE: fixed special-token ids and exact round trips for any text."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, models

from lmforge.artifacts import ArtifactError, load_tokenizer
from lmforge.tokenizer import SPECIAL_TOKENS, special_ids, train_tokenizer

TEXTS = ["The home team won the final in London yesterday.", "Die Mannschaft gewann das Finale.",
         "主队昨天在北京赢得了决赛。", "L'équipe a remporté la finale à Paris."] * 50


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return train_tokenizer(iter(TEXTS), vocab_size=400, show_progress=False)


def test_special_tokens_have_ids_0_to_6(tokenizer):
    assert [tokenizer.token_to_id(t) for t in SPECIAL_TOKENS] == list(range(7))
    assert special_ids(tokenizer) == {"pad": 0, "unk": 1, "bos": 2, "eos": 3, "mask": 4, "cls": 5, "sep": 6}
    assert tokenizer.get_vocab_size() <= 400  # fewer when the texts run out of pairs to merge


@pytest.mark.parametrize("text", [
    "The home team won 3:1 in München.",
    "主队昨天在北京赢得了决赛。Mixed 中英 text, never seen: 龘 and 🚀!",
    "  leading spaces,\ttabs\nand\n\nnewlines  ",
    "",
])
def test_round_trip_is_exact(tokenizer, text):
    ids = tokenizer.encode(text).ids
    assert not set(ids) & set(range(7))
    assert tokenizer.decode(ids) == text


def test_vocab_too_small_is_refused():
    with pytest.raises(ValueError, match="at least 263"):
        train_tokenizer(TEXTS, vocab_size=100)


def test_foreign_tokenizer_is_refused():
    with pytest.raises(ArtifactError, match="not .* at ids 0..6"):
        special_ids(Tokenizer(models.BPE()))


def test_load_from_folder_or_file(tmp_path, tokenizer):
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    for path in (tmp_path, tmp_path / "tokenizer.json"):
        assert load_tokenizer(path).encode("主队 won").ids == tokenizer.encode("主队 won").ids
    with pytest.raises(ArtifactError, match="missing: no tokenizer.json"):
        load_tokenizer(tmp_path / "missing")


def test_damaged_tokenizer_file_is_named(tmp_path):
    (tmp_path / "tokenizer.json").write_text('{"model": ')
    with pytest.raises(ArtifactError, match=r"tokenizer.json: not a tokenizer file .*\(.*line 1"):
        load_tokenizer(tmp_path)
