"""Reading documents from JSONL, gzip, text files and folders, and the errors bad input gets."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from lmforge.data import DataError, read_documents, write_documents


def write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_jsonl_records_become_documents(tmp_path):
    path = write_lines(tmp_path / "a.jsonl", [
        json.dumps({"id": "x", "text": "hello", "lang": "en"}),
        "",
        json.dumps({"text": "world", "source": "web", "metadata": {"k": 1}}),
    ])
    docs = list(read_documents([path]))
    assert docs == [
        {"id": "x", "text": "hello", "source": str(path), "metadata": {"lang": "en"}},
        {"id": f"{path}:3", "text": "world", "source": "web", "metadata": {"k": 1}},
    ]


def test_custom_text_field_and_single_path(tmp_path):
    path = write_lines(tmp_path / "a.jsonl", [json.dumps({"content": "hi"})])
    assert [d["text"] for d in read_documents(str(path), text_field="content")] == ["hi"]


def test_write_then_read_gzip_round_trip_is_deterministic(tmp_path):
    docs = [{"id": str(i), "text": f"dokument {i} – 中文", "source": "s", "metadata": {}} for i in range(5)]
    assert write_documents(tmp_path / "a.jsonl.gz", docs) == 5
    write_documents(tmp_path / "b.jsonl.gz", docs)
    assert (tmp_path / "a.jsonl.gz").read_bytes() == (tmp_path / "b.jsonl.gz").read_bytes()
    assert list(read_documents([tmp_path / "a.jsonl.gz"])) == docs


def test_txt_file_is_one_document(tmp_path):
    path = tmp_path / "note.txt"
    path.write_text("line one\nline two\n", encoding="utf-8")
    assert list(read_documents([path])) == [
        {"id": str(path), "text": "line one\nline two\n", "source": str(path), "metadata": {}}]


def test_folder_is_read_recursively_in_sorted_path_order(tmp_path):
    write_lines(tmp_path / "b" / "deep" / "c.jsonl", [json.dumps({"id": "c", "text": "C"})])
    write_documents(tmp_path / "a.jsonl.gz", [{"id": "a", "text": "A"}])
    (tmp_path / "b" / "d.txt").write_text("D", encoding="utf-8")
    (tmp_path / "ignored.csv").write_text("x,y\n", encoding="utf-8")
    (tmp_path / ".hidden.jsonl").write_text("not json\n", encoding="utf-8")
    assert [d["text"] for d in read_documents([tmp_path])] == ["A", "D", "C"]  # b/d.txt sorts before b/deep/


@pytest.mark.parametrize(("line", "expected"), [
    ('{"text": "ok"', "malformed JSON"),
    ('["text"]', "expected a JSON object, got list"),
    ('{"body": "x"}', "expected a string field 'text', it is missing"),
    ('{"text": 3}', "expected a string field 'text', got int"),
    ('{"text": "x", "metadata": 1}', "expected 'metadata' to be a JSON object"),
])
def test_bad_line_names_file_and_line(tmp_path, line, expected):
    path = write_lines(tmp_path / "bad.jsonl", [json.dumps({"text": "fine"}), line])
    with pytest.raises(DataError, match=f"{path}:2: {expected}"):
        list(read_documents([path]))


def test_invalid_utf8_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"text": "ok"}\n{"text": "\xff"}\n'))
    with pytest.raises(DataError, match=f"{path}:2: not valid UTF-8"):
        list(read_documents([path]))
    txt = tmp_path / "bad.txt"
    txt.write_bytes(b"caf\xe9")
    with pytest.raises(DataError, match=f"{txt}: not valid UTF-8 at byte 3"):
        list(read_documents([txt]))


def test_corrupt_gzip_is_a_data_error(tmp_path):
    path = tmp_path / "broken.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"text": "ok"}\n' * 100)[:40])
    with pytest.raises(DataError, match=f"{path}:.*cannot read"):
        list(read_documents([path]))


def test_missing_path_and_unsupported_file(tmp_path):
    with pytest.raises(DataError, match="nope.jsonl: no such file or folder"):
        list(read_documents([tmp_path / "nope.jsonl"]))
    csv = tmp_path / "table.csv"
    csv.write_text("a,b\n", encoding="utf-8")
    with pytest.raises(DataError, match="unsupported file type"):
        list(read_documents([csv]))


def test_empty_corpus_is_an_error(tmp_path):
    with pytest.raises(DataError, match="no documents found in"):
        list(read_documents([tmp_path]))
    blank = write_lines(tmp_path / "blank.jsonl", ["", "   "])
    with pytest.raises(DataError, match=f"no documents found in {blank}"):
        list(read_documents([blank]))
