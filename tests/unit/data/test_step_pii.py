"""PII anonymisation: each type found and validated, look-alikes left alone, planted PII all gone."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest
from pydantic import ValidationError

from lmforge.data import read_documents
from lmforge.data.curate.steps.pii import (
    NAME_TAGGERS,
    PHONE_DIGITS,
    PII_TYPES,
    PiiAnonymiser,
    PiiSettings,
    find_pii,
    luhn_valid,
    redact,
)
from lmforge.data.synthetic import generate_corpus

REGEX_TIER = ("email", "phone", "ipv4", "ipv6", "card")
"""Planted types the regex tier must remove; planted `person` needs the (absent) model tier."""


def anonymise(text: str, **settings) -> str:
    return PiiAnonymiser(PiiSettings(**settings)).apply(doc(text), Counter())[0]["text"]


def doc(text: str) -> dict:
    return {"id": "d", "text": text, "source": "test", "metadata": {"k": 1}}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Mail jane.doe+news@mail.example.co.uk today.", "Mail <EMAIL> today."),
        ("请在周五之前将表格发送至li.wei@example.cn。", "请在周五之前将表格发送至<EMAIL>。"),
        # internationalised and punycode domains; CJK text glued after a full stop is not a label
        (
            "Mail info@bücher.de, info@пример.рф or x@xn--d1acufc.xn--p1ai.",
            "Mail <EMAIL>, <EMAIL> or <EMAIL>.",
        ),
        ("发送至li.wei@example.com.谢谢.再见", "发送至<EMAIL>.谢谢.再见"),
        ("Call +1 (555) 123-4567 or +44 20 7946 0958.", "Call <PHONE> or <PHONE>."),
        ("Tel. +49 (0)89 1234567, +33 6 12 34 56 78, +86-21-12345678", "Tel. <PHONE>, <PHONE>, <PHONE>"),
        ("National: 030 12345678, 01 23 45 67 89, 01.23.45.67.89", "National: <PHONE>, <PHONE>, <PHONE>"),
        ("US (555) 123-4567 and 555-123-4567; E.164 +4930123456.", "US <PHONE> and <PHONE>; E.164 <PHONE>."),
        ("请拨打13912345678或138 1234 5678联系。", "请拨打<PHONE>或<PHONE>联系。"),
        ("From 192.168.1.20 and 8.8.8.8.", "From <IP> and <IP>."),
        (
            "来自2001:db8::85a3:8a2e的流量, also 2001:db8:0:0:1:0:0:1 and ::ffff:192.0.2.1.",
            "来自<IP>的流量, also <IP> and <IP>.",
        ),
        # every valid IPv6 address is one, whatever its block (reserved, link-local, loopback, documentation)
        ("Hosts fe80::1, dead::beef, 2001:db8::1 and ::1.", "Hosts <IP>, <IP>, <IP> and <IP>."),
        (
            "Open http://[2001:db8::1]:8080/ or [::1]:22, ff02::1, fc00::7, 100::1 and 64:ff9b::192.0.2.33.",
            "Open http://[<IP>]:8080/ or [<IP>]:22, <IP>, <IP>, <IP> and <IP>.",
        ),
        (
            "Full form 2001:0DB8:85a3:0000:0000:8A2E:0370:7334 and 1:2:3:4:5:6:7:8.",
            "Full form <IP> and <IP>.",
        ),
        (
            "Card 4111 1111 1111 1111, 5500-0000-0000-0004 or 378282246310005.",
            "Card <CARD>, <CARD> or <CARD>.",
        ),
        ("Amex 3782 822463 10005 paid.", "Amex <CARD> paid."),
        ("Paid with 4111 1111 1111 1111 2024-05-12.", "Paid with <CARD> 2024-05-12."),
        # an expiry date or code after the number is not its last group
        (
            "Card 4111-1111-1111-1111 123 12/2027, 4111 1111 1111 1111 12/27.",
            "Card <CARD> 123 12/2027, <CARD> 12/27.",
        ),
        ("IBAN DE89 3704 0044 0532 0130 00 and GB82WEST12345698765432.", "IBAN <IBAN> and <IBAN>."),
        # the token after an IBAN is not its tail, whatever its length; dashes group like spaces
        (
            "Pay DE89 3704 0044 0532 0130 00 EUR, PL61109010140000071219812874 PLN, "
            "DE89-3704-0044-0532-0130-00 A.",
            "Pay <IBAN> EUR, <IBAN> PLN, <IBAN> A.",
        ),
        ("身份证号11010519491231002X，另一个 110101199003074477。", "身份证号<CN_ID>，另一个 <CN_ID>。"),
    ],
)
def test_each_type_is_replaced_by_its_placeholder(text, expected):
    assert anonymise(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Card 4111 1111 1111 1112 was declined.",  # Luhn fails
        "IBAN DE89 3704 0044 0532 0130 01 is wrong.",  # mod 97 fails (its digits pass Luhn)
        "IBAN HR12 001 0051 8630 0016 A is mistyped.",  # a digit missing: not an IBAN, nor a phone
        # Luhn-valid, but no card scheme issues from 1 or 97: a millisecond timestamp, an ISBN, an order
        "created_at=1748503512348, ISBN 9781402894626, order 1000 0000 0000 0008.",
        "ID 110105194912310021 has a bad check digit.",  # GB 11643 check fails
        "ID 11010519491331002X has no month 13.",  # no such birth date
        "Meeting on 2024-05-12, 12.05.2024, 05/12/2024 at 10:30:45.",
        "Dates with a time: 01.02.2023 12 Uhr, 31-12-2023 2359.",
        "In 1998, 2019 and 2024 the team scored 42, 1500 and 3,500,000 points.",
        "Versions 1.2.3, v2.0.1.4 and Python 3.11.4 are out; 0.9.2 is older.",
        "999.1.1.1 and 256.0.0.1 and 1.2.3.4.5 are not addresses.",
        "Listen on 0.0.0.0:8080, [::]:8080 or 0:0:0:0:0:0:0.0.0.0: the unspecified address names no host.",
        "Slices a[1::2], m[:, ::2], x[::-1] and f(x)[3::4], the bare ::, and C++ std::vector<int>.",
        "At 12:30, 09:15:00 and 10:30:45.123 the ratio was 1:2:3.",
        "MAC 00:1a:2b:3c:4d:5e, 00-1A-2B-3C-4D-5E; ssh MD5 16:27:ac:a5:76:28:2d:36:63:1b:56:4d:eb:df:a6:48.",
        "Commit d2a84f4b8b650937ec8f73cd8be2c74add5a911b, sha256 e3b0c44298fc1c149afbf4c8996fb924.",
        "Scores went +12.5% and the rate was +3.2; 1 500 000 people voted.",
        "Mail me at jane at example dot com, or @handle on the site.",
    ],
)
def test_look_alikes_are_left_alone(text):
    assert anonymise(text) == text


def test_cards_ibans_and_ids_win_over_phones():
    spans = find_pii("4111-1111-1111-1111 DE89370400440532013000 11010519491231002X 4111111111111111")
    assert [kind for _, _, kind in spans] == ["card", "iban", "cn_id", "card"]


def test_luhn():
    assert luhn_valid("79927398713") and not luhn_valid("79927398710")


def test_counts_in_counters_and_metadata_but_never_values():
    text = "Write to a@example.com or b@example.org, call +44 20 7946 0958, host 10.0.0.1."
    counters: Counter = Counter()
    original = doc(text)
    [out] = PiiAnonymiser().apply(original, counters)
    assert original["text"] == text and original["metadata"] == {"k": 1}
    assert out["metadata"] == {"k": 1, "pii": {"email": 2, "phone": 1, "ipv4": 1}}
    assert counters == {"pii_email": 2, "pii_phone": 1, "pii_ipv4": 1}
    assert "example" not in json.dumps(out)
    [clean] = PiiAnonymiser().apply(doc("Nothing personal here."), counters)
    assert clean["text"] == "Nothing personal here." and clean["metadata"]["pii"] == {}


def test_types_placeholder_and_disabled_settings():
    text = "a@example.com +44 20 7946 0958"
    assert anonymise(text, types=["phone"]) == "a@example.com <PHONE>"
    assert anonymise(text, placeholder="[{tag}]") == "[EMAIL] [PHONE]"
    assert PiiAnonymiser(PiiSettings(enabled=False)).apply(doc(text), Counter()) == [doc(text)]
    with pytest.raises(ValidationError, match="must contain"):
        PiiSettings(placeholder="<PII>")
    with pytest.raises(ValidationError):
        PiiSettings(types=["ssn"])
    with pytest.raises(ValidationError, match="no name tagger|none yet"):
        PiiSettings(names="bert-ner")
    assert set(PiiSettings().types) == set(PII_TYPES)


class FixedTagger:
    """Stands in for a future NER model: tags the spans it is given, to test the hook only."""

    def __init__(self, *spans: tuple[int, int]) -> None:
        self._spans = list(spans)

    def spans(self, text: str) -> list[tuple[int, int]]:
        return self._spans


def test_name_tagger_hook_replaces_names_first():
    text = "Ada Lovelace <ada@example.com>"
    counters: Counter = Counter()
    [out] = PiiAnonymiser(names=FixedTagger((0, 12))).apply(doc(text), counters)
    assert out["text"] == "<PERSON> <<EMAIL>>"
    assert counters == {"pii_person": 1, "pii_email": 1}
    spans = find_pii(text, names=FixedTagger((14, 17)))  # a name inside the e-mail wins over it
    assert redact(text, spans, "#{tag}") == "Ada Lovelace <#PERSON@example.com>"


def iban(country: str, bban: str) -> str:
    """An IBAN with correct check digits, computed here (not by the code under test), in groups of 4."""
    numeric = "".join(str(ord(c) - 55) if c.isalpha() else c for c in bban + country + "00")
    compact = f"{country}{98 - int(numeric) % 97:02d}{bban}"
    return " ".join(compact[i : i + 4] for i in range(0, len(compact), 4))


def cn_id(first17: str) -> str:
    """A GB 11643 ID number with its ISO 7064 MOD 11-2 check character, computed here."""
    total = sum(int(d) * (2 ** (17 - i) % 11) for i, d in enumerate(first17))
    check = (12 - total % 11) % 11
    return first17 + ("X" if check == 10 else str(check))


def kinds(text: str, **kwargs) -> list[str]:
    return [kind for _, _, kind in find_pii(text, **kwargs)]


def test_iban_length_is_the_registry_length_of_its_country():
    norway = iban("NO", "86011117947")
    assert norway == "NO93 8601 1117 947"  # the published example: the helper is right
    russia = iban("RU", "04452560040702810412345678901")  # the registry's longest, 33
    saint_lucia = iban("LC", "ABCD123456789012345678901234")  # 32
    too_long = iban("LC", "ABCD1234EFGH5678IJKL9012MNOP34")  # 34: ISO 13616's maximum, not Saint Lucia's
    too_short = iban("NO", "8601111794")
    lengths = [len(x.replace(" ", "")) for x in (norway, russia, saint_lucia, too_long, too_short)]
    assert lengths == [15, 33, 32, 34, 14]
    for value in (norway, russia, saint_lucia):
        assert anonymise(f"Konto {value}.") == "Konto <IBAN>.", value
    # valid checksums, but not the length of their country: not replaced, and still kept from later types
    for value in (too_long, too_short, too_long.replace(" ", ""), too_short.replace(" ", "")):
        assert anonymise(f"Ref {value}.") == f"Ref {value}."


@pytest.mark.parametrize(
    ("birth", "is_id"),
    [
        ("19000101", True),
        ("19001231", True),
        ("18991231", False),
        ("18990101", False),
        ("19900310", True),
        ("19900320", True),
        ("19900330", True),
        ("19900230", False),
    ],
)
def test_cn_id_birth_date_from_1900(birth, is_id):
    number = cn_id(f"110101{birth}001")
    assert cn_id("11010519491231002") == "11010519491231002X"  # the helper agrees with a known ID
    assert kinds(f"身份证号{number}。", types=["cn_id"]) == (["cn_id"] if is_id else [])


def test_phone_digit_count_limits():
    low, high = PHONE_DIGITS
    digits = "4930123456789012345"
    for n in (low, high):
        assert anonymise(f"Call +{digits[:n]} now.") == "Call <PHONE> now.", n
    for n in (low - 1, high + 1):
        assert anonymise(f"Call +{digits[:n]} now.") == f"Call +{digits[:n]} now.", n
    assert anonymise("Wien 01 1234567.") == "Wien <PHONE>."  # 9 digits, national
    assert anonymise("Code 01 123456.") == "Code 01 123456."  # 8 digits


def test_slices_at_text_start_and_before_a_comma_are_not_addresses():
    for text in ("a[1::2] takes every other item.", "x[1::2, 0] and y[3::4,5]", "a[1::2]"):
        assert anonymise(text) == text
    assert anonymise("Host 1::2, then 3::4.") == "Host <IP>, then <IP>."


def test_touching_spans_are_both_kept():
    # a name span ending where a match starts, and one starting where a match ends
    # (the regex tier's own delimiters keep its matches from touching: the tagger can)
    before, after = "Ada a@example.com", "a@example.com Ada"
    assert find_pii(before, names=FixedTagger((0, 4))) == [(0, 4, "person"), (4, 17, "email")]
    assert find_pii(after, names=FixedTagger((13, 17))) == [(0, 13, "email"), (13, 17, "person")]
    # one character of overlap is still an overlap
    assert find_pii(after, names=FixedTagger((12, 17))) == [(12, 17, "person")]
    assert find_pii(before, names=FixedTagger((0, 5))) == [(0, 5, "person")]


class WordTagger:
    """Tags every occurrence of a word in the text it is given."""

    def __init__(self, word: str) -> None:
        self.word = word

    def spans(self, text: str) -> list[tuple[int, int]]:
        return [m.span() for m in re.finditer(re.escape(self.word), text)]


def test_name_tagger_reads_the_text():
    text = "Grace wrote to grace@example.com; Grace replied."
    spans = find_pii(text, names=WordTagger("Grace"))
    assert redact(text, spans) == "<PERSON> wrote to <EMAIL>; <PERSON> replied."


def test_name_tagger_by_name_from_the_registry(monkeypatch):
    monkeypatch.setitem(NAME_TAGGERS, "word", lambda: WordTagger("Ada"))
    counters: Counter = Counter()
    [out] = PiiAnonymiser(PiiSettings(names="word")).apply(doc("Ada met Ada."), counters)
    assert out["text"] == "<PERSON> met <PERSON>." and counters == {"pii_person": 2}


def test_redact_default_placeholder():
    text = "Mail a@example.com or call +44 20 7946 0958."
    assert redact(text, find_pii(text)) == "Mail <EMAIL> or call <PHONE>."
    assert redact(text, []) == text


def test_documents_without_metadata_or_without_pii():
    counters: Counter = Counter()
    bare = {"id": "d", "text": "Mail a@example.com."}
    [out] = PiiAnonymiser().apply(bare, counters)
    assert out == {"id": "d", "text": "Mail <EMAIL>.", "metadata": {"pii": {"email": 1}}}
    assert bare == {"id": "d", "text": "Mail a@example.com."}
    [out] = PiiAnonymiser().apply({"id": "e", "text": "Nothing here."}, counters)
    assert out == {"id": "e", "text": "Nothing here.", "metadata": {"pii": {}}}
    [out] = PiiAnonymiser().apply(doc("Nothing here."), counters)
    assert out == {**doc("Nothing here."), "metadata": {"k": 1, "pii": {}}}
    assert counters == {"pii_email": 1}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[list[dict], dict[str, dict]]:
    """The default built-in corpus (3 MB, seed 0), as `lmforge curate` scores it."""
    out = tmp_path_factory.mktemp("corpus")
    generate_corpus(out, seed=0, size_mb=3.0)
    truth = json.loads((out / "truth.json").read_text(encoding="utf-8"))["documents"]
    return list(read_documents(out / "documents.jsonl.gz")), {t["id"]: t for t in truth}


def test_planted_pii_is_gone_from_the_builtin_corpus(corpus):
    docs, truth = corpus
    step, counters = PiiAnonymiser(), Counter()
    planted, removed = Counter(), Counter()
    for original in docs:
        [out] = step.apply(original, counters)
        for pii in truth[original["id"]]["pii"]:
            planted[pii["type"]] += 1
            removed[pii["type"]] += pii["value"] not in out["text"]
    recall = {kind: removed[kind] / planted[kind] for kind in planted}
    print("\nPII recall on the built-in corpus:", {k: f"{v:.4f} of {planted[k]}" for k, v in recall.items()})
    assert all(recall[kind] >= 0.98 for kind in REGEX_TIER), recall
    assert recall["person"] == 0.0  # names are for the model tier; none ships
    assert sum(counters.values()) == sum(planted[kind] for kind in REGEX_TIER)


def test_replacements_hit_planted_spans_of_the_same_type(corpus):
    docs, truth = corpus
    hits, misses = Counter(), Counter()
    for original in docs:
        planted = truth[original["id"]]["pii"]
        for start, end, kind in find_pii(original["text"]):
            overlap = [p["type"] for p in planted if start < p["end"] and p["start"] < end]
            (hits if kind in overlap else misses)[kind] += 1
    precision = {kind: hits[kind] / (hits[kind] + misses[kind]) for kind in hits | misses}
    print("\nPII precision on the built-in corpus:", precision, "replacements off target:", dict(misses))
    assert all(value >= 0.99 for value in precision.values()), precision
