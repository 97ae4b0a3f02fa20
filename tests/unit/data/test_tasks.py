"""Labelled-data readers: the real SST-2, AG News, BANKING77 and WNUT-17 files, and malformed input."""

from __future__ import annotations

import gzip
from collections import Counter
from pathlib import Path

import pytest

from lmforge.data.documents import DataError
from lmforge.data.tasks import (
    TaggedExample,
    TextExample,
    encode,
    infer_labels,
    read_conll,
    read_text_labels,
)

WNUT_TAGS = ["O"] + [f"{p}-{t}" for t in ("corporation", "creative-work", "group", "location", "person",
                                           "product") for p in "BI"]


def test_sst2_dev_and_gzipped_train(shared_data):
    dev = read_text_labels(shared_data / "sst2/dev.tsv", "sentence", "label")
    assert len(dev) == 6735
    assert infer_labels(dev) == ["0", "1"]
    assert dev[0] == TextExample("the expressive power of the camera", "1")  # trailing space stripped
    assert len(read_text_labels(shared_data / "sst2/train.tsv.gz", "sentence", "label")) == 60614


def test_agnews_has_no_header_so_columns_are_positions(shared_data):
    examples = read_text_labels(shared_data / "agnews/test.tsv", 0, 1)
    assert len(examples) == 7600
    classes = ["Business", "Sci/Tech", "Sports", "World"]
    assert Counter(e.label for e in examples) == dict.fromkeys(classes, 1900)


def test_banking77_test_with_quoted_multiline_texts(shared_data):
    examples = read_text_labels(shared_data / "banking77/test.csv", "text", "category")
    assert len(examples) == 3080
    assert len(infer_labels(examples)) == 77
    assert set(Counter(e.label for e in examples).values()) == {40}
    # Three quoted texts start with newlines (the file has 3,085 lines); they are read whole, then stripped.
    assert TextExample("What businesses accept this card?", "card_acceptance") in examples


@pytest.mark.parametrize(("name", "sentences"), [
    ("wnut17train.conll", 3394),  # sentences end at a lone-TAB line (and some empty lines)
    ("emerging.dev.conll", 1009),
    ("emerging.test.annotated", 1287),  # empty-line separated
])
def test_wnut17_sentences(shared_data, name, sentences):
    examples = read_conll(shared_data / "wnut17" / name)
    assert len(examples) == sentences
    assert all(len(e.tokens) == len(e.tags) > 0 for e in examples)
    assert infer_labels(examples) == WNUT_TAGS


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_malformed_tsv_rows_are_reported_with_line_numbers(tmp_path):
    rows = ["text\tlabel", "good one\tpos", "good two\tneg", "extra\tpos\tcolumn", "fine\tpos",
            "fine\tneg", "fine\tpos", "fine\tneg", "no label column", "last\tpos"]
    bad = write(tmp_path / "bad.tsv", "\n".join(rows) + "\n")
    with pytest.raises(DataError) as error:
        read_text_labels(bad)
    assert str(error.value) == "bad.tsv: 2 malformed rows (lines 4, 9): expected 2 tab-separated columns"
    examples, lines = read_text_labels(bad, skip_malformed=True)
    assert lines == [4, 9]
    assert [e.text for e in examples] == ["good one", "good two", "fine", "fine", "fine", "fine", "last"]


def test_empty_text_and_mixed_errors_are_listed_per_error(tmp_path):
    bad = write(tmp_path / "bad.tsv", "text\tlabel\n \tpos\nok\t\nonly\n")
    with pytest.raises(DataError, match=r"^bad.tsv: 2 malformed rows \(lines 2, 3\): empty text or label; "
                                        r"1 malformed row \(line 4\): expected 2"):
        read_text_labels(bad)


def test_headerless_file_takes_its_width_from_the_first_row(tmp_path):
    # A stray tab in one text would otherwise turn part of the text into its label.
    path = write(tmp_path / "news.tsv", "a\tWorld\nb\tmore\tSports\nc\tWorld\n")
    with pytest.raises(DataError, match=r"1 malformed row \(line 2\): expected 2 tab-separated columns"):
        read_text_labels(path, 0, 1)


def test_csv_multiline_rows_keep_line_numbers_right(tmp_path):
    path = write(tmp_path / "q.csv", 'text,category\n"two\nlines",a\n"three\nline\ntext",b\nbroken\nok,a\n')
    examples, lines = read_text_labels(path, "text", "category", skip_malformed=True)
    assert examples == [TextExample("two\nlines", "a"), TextExample("three\nline\ntext", "b"),
                        TextExample("ok", "a")]
    assert lines == [7]


def test_gzipped_csv(tmp_path):
    path = tmp_path / "q.csv.gz"
    path.write_bytes(gzip.compress(b"label,text\nx,hello\n"))
    assert read_text_labels(path) == [TextExample("hello", "x")]


def test_jsonl_fields_by_name(tmp_path):
    lines = ['{"text": "great", "label": 1}', "", '{"text": "bad"}', "not json",
             '{"text": "meh", "label": "0"}']
    path = write(tmp_path / "d.jsonl", "\n".join(lines) + "\n")
    examples, bad = read_text_labels(path, skip_malformed=True)
    assert examples == [TextExample("great", "1"), TextExample("meh", "0")]
    assert bad == [3, 4]
    with pytest.raises(DataError, match="name, not position"):
        read_text_labels(path, 0, 1)


@pytest.mark.parametrize(("columns", "message"), [
    (("sentence", "label"), "no column 'sentence'"),
    (("text", 1), "not a mix"),
])
def test_bad_column_choices(tmp_path, columns, message):
    path = write(tmp_path / "d.tsv", "text\tlabel\na\tb\n")
    with pytest.raises(DataError, match=message):
        read_text_labels(path, *columns)


def test_unknown_format_and_empty_file(tmp_path):
    with pytest.raises(DataError, match="unknown labelled-data format"):
        read_text_labels(write(tmp_path / "d.txt", "a\tb\n"))
    with pytest.raises(DataError, match="no examples"):
        read_text_labels(write(tmp_path / "d.tsv", "text\tlabel\n"))


def test_conll_separators_docstart_and_spaces(tmp_path):
    text = "-DOCSTART- -X- O O\n\nEU B-ORG\nrejects O\n\t\nGerman\tB-MISC\n   \ncall\tO\n\n\n"
    assert read_conll(write(tmp_path / "a.conll", text)) == [
        TaggedExample(["EU", "rejects"], ["B-ORG", "O"]),
        TaggedExample(["German"], ["B-MISC"]),
        TaggedExample(["call"], ["O"]),
    ]


def test_conll_line_without_tag_is_reported_and_drops_its_sentence(tmp_path):
    path = write(tmp_path / "bad.conll", "a\tO\nb\n\nc\tB-x\n\nd\t\ne\tO\n")
    message = r"^bad.conll: 2 malformed rows \(lines 2, 6\): expected a token and a tag$"
    with pytest.raises(DataError, match=message):
        read_conll(path)
    examples, lines = read_conll(path, skip_malformed=True)
    assert examples == [TaggedExample(["c"], ["B-x"])]
    assert lines == [2, 6]


def test_infer_labels_completes_bio_pairs():
    examples = [TaggedExample(["a", "b"], ["B-per", "O"]), TaggedExample(["c"], ["I-loc"])]
    assert infer_labels(examples) == ["O", "B-loc", "I-loc", "B-per", "I-per"]
    with pytest.raises(DataError, match="not BIO: S-per"):
        infer_labels([TaggedExample(["a"], ["S-per"])])


def test_encode_uses_the_label_set_and_refuses_unknown_labels():
    assert encode(["b", "a", "b"], ["a", "b"]) == [1, 0, 1]
    with pytest.raises(DataError, match="not in the label set: c"):
        encode(["a", "c"], ["a", "b"])
