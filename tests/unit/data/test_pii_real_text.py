"""PII on text the built-in corpus generator did not write: real web pages, real sentences, real numbers.

- Real PII in real documents (`../shared/data/web`, AG News): each value replaced whole, in place.
- Known values planted into real sentences of 21 languages, between words or inside CJK text,
  bare or in brackets and punctuation: each replaced whole, and the sentence otherwise unchanged.
- Real sentences and queries with their numbers, dates and times: nothing replaced.
- Real digit runs of card length (year lists, crawl timestamps): only Luhn-valid ones may become
  `<CARD>`, by a Luhn check written here.
"""

from __future__ import annotations

import csv
import random
import re
from collections import Counter

import pytest

from lmforge.data.curate.steps.pii import PiiAnonymiser, find_pii
from lmforge.data.sources import iter_sources


def anonymise(text: str) -> str:
    [out] = PiiAnonymiser().apply({"id": "d", "text": text, "source": "t", "metadata": {}}, Counter())
    return out["text"]


@pytest.fixture(scope="module")
def web_texts(shared_data) -> dict[str, str]:
    """Real web documents, read as curation reads them (WARC pages through trafilatura)."""
    web = shared_data / "web"
    paths = [web / "jsonl_dolma" / "provided_documents_000.jsonl.gz",
             web / "warc_dolma" / "sample-0001.warc.gz", web / "warc_resiliparse_cc" / "warcfile.warc.gz"]
    texts = {path.parent.name: "\n\n".join(d["text"] for d in iter_sources([path]) if isinstance(d, dict))
             for path in paths}
    texts["agnews"] = (shared_data / "agnews" / "test.tsv").read_text(encoding="utf-8")
    return texts


REAL_PII = [  # (source, left context, value, right context, placeholder), copied from the files
    ("jsonl_dolma", "Tel. ", "020 7393 1500", "\nE-mail", "<PHONE>"),
    ("jsonl_dolma", "E-mail: ", "ask@bufvc.ac.uk", "\nTwitter", "<EMAIL>"),
    ("jsonl_dolma", "email: ", "info@claihr.ca", " | Charitable #138620257RR0001", "<EMAIL>"),
    ("jsonl_dolma", "Brussels Tel: ", "+32 (0)2 790 75 75", " Fax: ", "<PHONE>"),
    ("jsonl_dolma", "Fax: ", "+32 (0)2 790 75 85", " ", "<PHONE>"),
    ("jsonl_dolma", " ", "info@eun.org", "", "<EMAIL>"),
    ("warc_dolma", "contact us at ", "info@creativecommons.org", "\n", "<EMAIL>"),
    ("warc_dolma", "used the IPs ", "38.107.191.66", " through ", "<IP>"),
    ("warc_dolma", " through ", "38.107.191.119", ". The current", "<IP>"),
    ("warc_resiliparse_cc", "网站地图", "fyzw88@126.com", "\n", "<EMAIL>"),
    ("warc_resiliparse_cc", "电话：", "021-54098575", "  ", "<PHONE>"),
    ("warc_resiliparse_cc", "传真：", "021-54098577", "  监督电话：", "<PHONE>"),
    ("warc_resiliparse_cc", "监督电话：", "13611778776", "\nE-mail: ", "<PHONE>"),
    ("warc_resiliparse_cc", "E-mail: ", "550502573@qq.com", "  http://www.focustm.com", "<EMAIL>"),
    ("warc_resiliparse_cc", "电话：", "00852-27100021", "  传真：", "<PHONE>"),
    ("warc_resiliparse_cc", "传真：", "00852-26875563", " \n", "<PHONE>"),
    ("warc_resiliparse_cc", "Hovenier (", "0900 4683643", ")!", "<PHONE>"),  # the bracket stays
    ("agnews", "Kandansky at ", "781-442-0750", " or through e-mail", "<PHONE>"),
]


@pytest.mark.parametrize(("source", "left", "value", "right", "tag"), REAL_PII,
                         ids=[case[2] for case in REAL_PII])
def test_real_pii_in_real_documents_is_replaced_whole(web_texts, source, left, value, right, tag):
    text = web_texts[source]
    assert left + value + right in text, "the real text changed: update the case"
    line_start = text.rfind("\n", 0, text.index(left + value + right)) + 1
    line_end = text.find("\n", text.index(left + value + right) + len(left + value))
    line = text[line_start:line_end if line_end >= 0 else None]
    out = anonymise(line + "\n")
    assert value not in out
    assert left.lstrip("\n") + tag + right.split("\n")[0] in out


# Values every anonymiser must find, whatever their surroundings.
PLANTED = {
    "<EMAIL>": ["jane.doe+news@mail.example.co.uk", "li_wei@example.cn", "A.Nother@sub.example.org"],
    "<PHONE>": ["+44 20 7946 0958", "+1 (555) 123-4567", "(555) 123-4567", "+86 139 1234 5678",
                "030 12345678", "555-123-4567"],
    "<IP>": ["192.168.1.20", "8.8.8.8", "203.0.113.254",
             "fe80::1", "dead::beef", "2001:db8::1", "::1", "2001:db8:85a3::8a2e:370:7334", "ff02::1",
             "::ffff:192.0.2.1", "fe80::1ff:fe23:4567:890a", "2001:0db8:0000:0000:0000:ff00:0042:8329"],
    "<CARD>": ["4111 1111 1111 1111", "5500-0000-0000-0004", "378282246310005", "3782 822463 10005",
               "6011111111111117"],
}
WRAPPERS = [("", ""), ("(", ")"), ("", ","), ("", "."), ("<", ">"), ('"', '"'), ("", ";")]
CJK = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")


@pytest.fixture(scope="module")
def sentences(shared_data) -> list[tuple[str, str]]:
    """(language, sentence) of the 21-language Tatoeba set."""
    path = shared_data / "langid_tatoeba" / "langid_tatoeba_21lang.tsv"
    with open(path, encoding="utf-8", newline="") as f:
        return [(row["lang_iso639_3"], row["text"]) for row in csv.DictReader(f, delimiter="\t")]


def plant_place(rng: random.Random, sentence: str) -> tuple[int, int, str] | None:
    """Where to plant: (start, end, padding), replacing a space between two words (padded with
    spaces), or nothing between two CJK characters of Chinese/Japanese text (no padding)."""
    places = [(i, i + 1, " ") for i, char in enumerate(sentence[1:-1], 1)
              if char == " " and sentence[i - 1].isalpha() and sentence[i + 1].isalpha()]
    places += [(i, i, "") for i in range(1, len(sentence))
               if CJK.match(sentence[i - 1]) and CJK.match(sentence[i])]
    return rng.choice(places) if places else None


def test_values_planted_into_real_sentences_are_replaced_and_nothing_else(sentences):
    rng, checked, wrong = random.Random(0), Counter(), []
    for tag, values in PLANTED.items():
        for value in values:
            for _ in range(12):
                lang, sentence = rng.choice(sentences)
                if (place := plant_place(rng, sentence)) is None:
                    continue
                start, end, pad = place
                before, after = rng.choice(WRAPPERS)
                left, right = sentence[:start] + pad + before, after + pad + sentence[end:]
                got = anonymise(left + value + right)
                checked[lang] += 1
                if got != left + tag + right:
                    wrong.append((lang, value, left + value + right, got))
    assert not wrong, wrong[:5]
    assert len(checked) >= 18 and sum(checked.values()) >= 300, checked


def test_real_sentences_with_numbers_dates_and_times_are_left_alone(shared_data, sentences):
    """Tatoeba (21 languages, with times like 2:30), WikiText-2 (numbers, dates, scores) and
    BANKING77 customer queries (amounts, card talk without card numbers): nothing is PII."""
    wiki = (shared_data / "wikitext2" / "tokens" / "valid.txt").read_text(encoding="utf-8").splitlines()
    with open(shared_data / "banking77" / "test.csv", encoding="utf-8", newline="") as f:
        queries = [row["text"] for row in csv.DictReader(f)]
    texts = [s for _, s in sentences] + wiki + queries
    assert sum(bool(re.search(r"\d:\d\d", t)) for t in texts) >= 5  # times are in there
    found = [(t[max(0, a - 20):b + 20], kind) for t in texts for a, b, kind in find_pii(t)]
    assert not found, found[:10]


def luhn_ok(digits: str) -> bool:
    """Luhn, written out: double every second digit from the right, add the digits of the products."""
    total = 0
    for position, digit in enumerate(int(d) for d in reversed(digits)):
        total += sum(divmod(digit * 2, 10)) if position % 2 else digit
    return total % 10 == 0


def test_real_digit_runs_become_cards_only_when_luhn_valid(shared_data, web_texts):
    """Year lists of a real search page (`1896 1897 1898 1899 ...`, grouped like a card) and the
    14-digit crawl timestamps of real Common Crawl file names fail Luhn nearly always: they are
    numbers, not cards, and must stay as they are."""
    folder = shared_data / "web" / "jsonl_dolma"
    lines = [line for name in ("cc_en_head-0091.jsonl", "cc_en_head-0174.jsonl")
             for line in (folder / name).read_text(encoding="utf-8").splitlines()]
    texts = [web_texts["jsonl_dolma"], *lines]
    card_length = re.compile(r"(?<!\d)(?:\d{13,19}|\d{4}(?: \d{4}){3})(?!\d)")
    runs = [m.group() for t in texts for m in card_length.finditer(t)]
    failing = [r for r in runs if not luhn_ok(r.replace(" ", ""))]
    assert len(failing) >= 50, "the real text changed: pick other digit runs"
    for text in texts:
        spans = find_pii(text)
        cards = [text[a:b] for a, b, kind in spans if kind == "card"]
        assert all(luhn_ok(re.sub(r"\D", "", card)) for card in cards), cards
        out = anonymise(text)
        stamps = re.findall(r"CC-MAIN-(\d{14})-(\d{14})", text)
        assert all(a in out and b in out for a, b in stamps if not luhn_ok(a) and not luhn_ok(b))
    assert sum("CC-MAIN-2020" in line for line in lines) >= 10

