"""Readers for curation: every format on real files, and bad input counted as Malformed, never raised."""

from __future__ import annotations

import datetime
import gzip
import json
import shutil
import socket
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from warcio.archiveiterator import ArchiveIterator

from lmforge.data.documents import DataError, read_documents
from lmforge.data.sources import Malformed, iter_sources

EXAMPLE_COM = "This domain is established to be used for illustrative examples"


@pytest.fixture(scope="module")
def web(shared_data) -> Path:
    return shared_data / "web"


def split(items) -> tuple[list[dict], list[Malformed]]:
    items = list(items)
    return [i for i in items if isinstance(i, dict)], [i for i in items if isinstance(i, Malformed)]


def jsonl(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def record(i: int) -> bytes:
    return json.dumps({"id": f"d{i}", "text": f"document {i}"}).encode()


def test_dolma_jsonl_plain_gzip_and_json_gz(web, tmp_path):
    for name in ("cc_en_head-0091.jsonl", "cc_en_head-0174.jsonl"):
        docs, bad = split(iter_sources([web / "jsonl_dolma" / name]))
        assert len(docs) == 10 and not bad
        assert all(d["text"] and d["source"] == "common-crawl" for d in docs)
        assert all(d["metadata"]["language"] == "en" for d in docs)
    provided, _ = split(iter_sources([web / "jsonl_dolma" / "provided_documents_000.jsonl.gz"]))
    deduper, _ = split(iter_sources([web / "jsonl_dolma" / "deduper_documents_000.jsonl.gz"]))
    assert len(provided) == 10 and [d["id"] for d in provided] == [d["id"] for d in deduper]
    # dolma names its JSONL files *.json.gz, as this one was named upstream
    shutil.copy(web / "jsonl_dolma" / "provided_documents_000.jsonl.gz", tmp_path / "000.json.gz")
    assert [d["text"] for d in iter_sources([tmp_path / "000.json.gz"])] == [d["text"] for d in provided]


def test_warc_pages_become_their_main_text(web):
    docs, bad = split(iter_sources([web / "warc_dolma"]))
    assert len(docs) == 22 + 15 and not bad  # the response records; requests and wget logs are skipped
    assert all(d["text"].strip() and d["metadata"]["url"].startswith("https://") for d in docs)
    assert all(d["metadata"]["warc_record_id"].startswith("<urn:uuid:") for d in docs)
    assert all(d["metadata"]["date"].startswith("2024-04-25T") for d in docs)
    assert all("<div" not in d["text"] and "<script" not in d["text"] for d in docs)
    assert [d["metadata"]["url"] for d in docs].count("https://allenai.org/") == 3
    assert docs[0]["id"] == f"{web / 'warc_dolma' / 'sample-0000.warc.gz'}#2"  # after warcinfo and request
    creative = next(d for d in docs if d["metadata"]["url"] == "https://creativecommons.org/")
    assert "Creative Commons" in creative["text"]


def test_declared_charset_decodes_a_gbk_page(web):
    docs, _ = split(iter_sources([web / "warc_resiliparse_cc" / "warcfile.warc.gz"]))
    assert len(docs) == 16
    gbk_meta = next(d for d in docs if d["metadata"]["url"] == "http://041696.com/15477/list_6_4.html")
    assert gbk_meta["text"].startswith("发布博文")  # declared in <meta> only; a guess read it as Latin
    assert sum(not d["text"] for d in docs) == 3  # nothing extractable: kept, for the steps to remove


def test_whirlwind_warc_and_wet_are_the_same_page(web):
    (page,) = iter_sources([web / "cc_whirlwind" / "whirlwind.warc.gz"])
    (wet,) = iter_sources([web / "cc_whirlwind" / "whirlwind.warc.wet.gz"])
    assert page["metadata"]["url"] == wet["metadata"]["url"] == "https://an.wikipedia.org/wiki/Escopete"
    assert page["text"].startswith("Escopete ye un municipio") and "Escopete ye un municipio" in wet["text"]
    assert wet["metadata"]["content_type"] == "text/plain"
    with gzip.open(web / "cc_whirlwind" / "whirlwind.warc.wet.gz") as handle:
        (conversion,) = [r.content_stream().read().decode() for r in ArchiveIterator(handle)
                         if r.rec_type == "conversion"]
    assert wet["text"] == conversion  # as is


def test_ccnet_wet_with_wrong_content_lengths(web):
    docs, bad = split(iter_sources([web / "wet_ccnet_fixture" / "sample.warc.wet"]))
    assert not bad
    assert [d["metadata"]["url"] for d in docs] == [
        "http://sample_english.com", "http://sample_chinese.zh", "http://sample_russian.ru"]
    assert docs[0]["text"].startswith("Famous Mark Twain Quotes\n")
    assert "事實是固執的東西" in docs[1]["text"] and "Правда нет." in docs[2]["text"]


@pytest.mark.parametrize(("name", "url"), [
    ("example.warc", "http://example.com/"),
    ("example.warc.gz", "http://example.com/"),
    ("example.arc.gz", "http://example.com/"),
    ("example-resource.warc.gz", "http://example.com/"),
    ("example-iana.org-chunked.warc", "http://www.iana.org/"),
    # Content-Length 2 bytes short of the record: warcio warns, the page is whole.
    ("example-trunc.warc", "http://example.com/"),
    # warcio reads gzip member by member and gives an empty body here; one stream has the page.
    ("example-wrong-chunks.warc.gz", "http://example.com/"),
    # One gzip member holding every record: warcio refuses the file; its records are sound.
    ("example-bad-non-chunked.warc.gz", "http://example.com/"),
])
def test_warcio_fixtures_give_their_one_page(web, name, url):
    docs, bad = split(iter_sources([web / "warcio_fixtures" / name]))
    assert not bad and [d["metadata"]["url"] for d in docs] == [url]
    assert (EXAMPLE_COM if "example.com" in url else "Root Zone") in docs[0]["text"]


def test_arc_records_get_no_invented_record_id(web):
    (doc,) = iter_sources([web / "warcio_fixtures" / "example.arc.gz"])
    assert doc["metadata"]["warc_record_id"] is None  # warcio would invent a random one
    assert doc["metadata"]["date"] == "2014-02-16T05:02:21Z"


def test_cut_off_warc_gz_keeps_what_precedes_the_break(web, tmp_path):
    whole = web / "warc_dolma" / "sample-0000.warc.gz"
    cut = tmp_path / "cut.warc.gz"
    cut.write_bytes(whole.read_bytes()[:100_000])
    docs, bad = split(iter_sources([cut]))
    full, _ = split(iter_sources([whole]))
    assert [d["text"] for d in docs] == [d["text"] for d in full[:13]]
    assert bad == [Malformed(str(cut), "offset 346771", "cannot read (OSError: gzip stream cut off: "
                             "Compressed file ended before the end-of-stream marker was reached)")]


def test_cut_off_plain_warc_reports_the_record(web, tmp_path):
    cut = tmp_path / "cut.warc"
    cut.write_bytes((web / "warcio_fixtures" / "example.warc").read_bytes()[:1800])
    assert list(iter_sources([cut])) == [
        Malformed(str(cut), "offset 1197", "record cut off: 762 of its 975 bytes are missing")]
    with pytest.raises(DataError, match=r"cut.warc \(offset 1197\): record cut off"):
        list(read_documents(cut))


def test_cut_off_wet_and_garbage_archives(web, tmp_path):
    wet = tmp_path / "cut.wet.gz"
    wet.write_bytes((web / "cc_whirlwind" / "whirlwind.warc.wet.gz").read_bytes()[:2000])
    (bad,) = iter_sources([wet])
    assert bad.location == "line 20" and bad.error.startswith("cannot read the record from here on")
    for name in ("junk.warc", "junk.warc.gz"):
        (tmp_path / name).write_bytes(b"hello world\n" * 10)
        (bad,) = iter_sources([tmp_path / name])
        assert bad.location == "offset 0" and bad.error.startswith("cannot read (")


def test_bad_jsonl_lines_are_counted_and_reading_goes_on(tmp_path):
    path = jsonl(tmp_path / "a.jsonl", [
        record(1), b'{"text": "ok"', b'["text"]', b'{"body": "x"}', b'{"text": 3}',
        b'{"text": "caf\xe9"}', b"", record(7)])
    docs, bad = split(iter_sources([path]))
    assert [d["id"] for d in docs] == ["d1", "d7"]
    assert [(b.location, b.error.split(" (")[0]) for b in bad] == [
        ("line 2", "malformed JSON"),
        ("line 3", "expected a JSON object, got list"),
        ("line 4", "expected a string field 'text', it is missing"),
        ("line 5", "expected a string field 'text', got int"),
        ("line 6", "not valid UTF-8 at byte 13 of the line"),
    ]
    assert str(bad[0]).startswith(f"{path}:2: malformed JSON")


def test_cut_off_gzip_yields_whole_lines_then_one_malformed(tmp_path):
    data = gzip.compress(b"".join(record(i) + b"\n" for i in range(5000)))
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[:len(data) // 2])
    docs, bad = split(iter_sources([path]))
    assert 1000 < len(docs) < 5000 and [d["id"] for d in docs] == [f"d{i}" for i in range(len(docs))]
    assert bad == [Malformed(str(path), f"line {len(docs) + 1}", bad[0].error)]
    assert "Compressed file ended" in bad[0].error


def test_zstd_frames_and_cut_off_zstd(tmp_path):
    lines = b"".join(record(i) + b"\n" for i in range(3000))
    zstd = zstandard.ZstdCompressor()
    whole = zstd.compress(lines[:40_000]) + zstd.compress(lines[40_000:])  # two frames, as pzstd writes
    (tmp_path / "a.jsonl.zst").write_bytes(whole)
    assert [d["id"] for d in iter_sources([tmp_path / "a.jsonl.zst"])] == [f"d{i}" for i in range(3000)]
    (tmp_path / "cut.jsonl.zst").write_bytes(whole[:-3])
    docs, bad = split(iter_sources([tmp_path / "cut.jsonl.zst"]))
    assert [d["id"] for d in docs] == [f"d{i}" for i in range(len(docs))] and len(docs) < 3000
    assert [(b.location, b.error) for b in bad] == [
        (f"line {len(docs) + 1}", "cannot read (zstd file ended in the middle of a frame)")]


def test_parquet_in_batches_with_bad_rows(tmp_path):
    texts = [f"row {i}" for i in range(2500)]
    texts[1500] = None
    crawled = [datetime.date(2024, 5, 18)] * 2500
    pq.write_table(pa.table({"text": texts, "lang": ["en"] * 2500, "crawled": crawled}),
                   tmp_path / "a.parquet", row_group_size=1000)
    docs, bad = split(iter_sources([tmp_path / "a.parquet"]))
    assert len(docs) == 2499 and docs[1500] == {
        "id": f"{tmp_path / 'a.parquet'}#1501", "text": "row 1501", "source": str(tmp_path / "a.parquet"),
        "metadata": {"lang": "en", "crawled": "2024-05-18"}}  # JSON-ready, as documents are written
    assert [(b.location, b.error) for b in bad] == [
        ("row 1500", "expected a string field 'text', got NoneType")]
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "b.parquet")
    (missing,) = iter_sources([tmp_path / "b.parquet"])
    assert missing.error == "expected a text column 'text', columns are body"
    (tmp_path / "c.parquet").write_bytes(b"PAR1 not really")
    (broken,) = iter_sources([tmp_path / "c.parquet"])
    assert broken.error.startswith("cannot read Parquet")


def test_folders_txt_empty_hidden_unknown_and_missing(tmp_path):
    (tmp_path / "b" / ".cache").mkdir(parents=True)
    note = tmp_path / "b" / "note.txt"
    note.write_text("hello\n", encoding="utf-8")
    (tmp_path / "b" / ".cache" / "x.txt").write_text("hidden", encoding="utf-8")
    (tmp_path / "a.txt").write_bytes(b"caf\xe9")
    (tmp_path / "empty.jsonl").write_bytes(b"")
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "empty.warc.gz").write_bytes(b"")
    (tmp_path / "table.csv").write_text("a,b\n", encoding="utf-8")
    items = list(iter_sources([tmp_path, tmp_path / "table.csv", tmp_path / "nope.jsonl"]))
    assert items == [
        Malformed(str(tmp_path / "a.txt"), "", "not valid UTF-8 at byte 3"),
        {"id": str(note), "text": "hello\n", "source": str(note), "metadata": {}},
        Malformed(str(tmp_path / "table.csv"), "", items[2].error),
        Malformed(str(tmp_path / "nope.jsonl"), "", "no such file or folder"),
    ]
    assert items[2].error.startswith("unsupported file type (expected .jsonl, .jsonl.gz, .jsonl.zst")


def test_hf_dataset_saved_to_disk(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = {"text": ["first", "second"], "label": [0, 1]}
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "plain"))
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows),
                          "test": datasets.Dataset.from_dict({"text": ["third"], "label": [2]})}
                         ).save_to_disk(str(tmp_path / "splits"))
    spec = f"hf:{tmp_path / 'plain'}"
    assert list(iter_sources([spec])) == [
        {"id": f"{spec}#0", "text": "first", "source": spec, "metadata": {"label": 0}},
        {"id": f"{spec}#1", "text": "second", "source": spec, "metadata": {"label": 1}}]
    assert [d["text"] for d in iter_sources([f"hf:{tmp_path / 'splits'}"])] == ["first", "second"]
    assert [d["text"] for d in iter_sources([f"hf:{tmp_path / 'splits'}@test"])] == ["third"]
    (bad,) = iter_sources([f"hf:{tmp_path / 'splits'}@validation"])
    assert bad.error.startswith(f"cannot load dataset '{tmp_path / 'splits'}' (KeyError")


def test_hub_dataset_offline_is_one_quick_malformed(monkeypatch):
    def no_network(*_args, **_kwargs):
        raise socket.gaierror("no network")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    (bad,) = iter_sources(["hf:someone/some-corpus"])
    assert bad.source == "hf:someone/some-corpus" and "'someone/some-corpus'" in bad.error
    with pytest.raises(DataError, match="^hf:someone/some-corpus: cannot load dataset 'someone/some-corpus'"):
        list(read_documents("hf:someone/some-corpus"))


def test_malformed_prints_like_a_compiler_message():
    assert str(Malformed("a.jsonl", "line 12", "bad")) == "a.jsonl:12: bad"
    assert str(Malformed("a.warc", "offset 34", "bad")) == "a.warc (offset 34): bad"
    assert str(Malformed("a.txt", "", "bad")) == "a.txt: bad"
