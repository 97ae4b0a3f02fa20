"""PII classes generated in running text (Hypothesis), checked both ways against references written here.

- IBANs of every country of the SWIFT registry, built from its BBAN format with check digits
  computed here, unbroken or grouped by spaces or dashes, followed by assorted tokens: replaced
  whole, neighbours kept; with a typo, a missing or an extra character: nothing replaced at all.
- Card numbers of each scheme (IIN prefix, length, Luhn digit computed here): replaced; timestamps,
  ISBNs, Luhn-valid order numbers outside every scheme: kept; phone-like digit runs: never a card.
- E-mail addresses with internationalised and punycode domains (`str.encode("idna")` is the
  reference), plus-addressing and subdomains: replaced whole.
- IPv4 and IPv6 in their written forms (prefix lengths, zone ids, ports, embedded IPv4): the
  address replaced whole and what follows it kept, or, the unspecified `::` and `0.0.0.0`, left alone.

Each generated value is checked between many texts before and after it (`wrong_in_context`).

Deterministic (`derandomize`, no example database), no deadline, a few seconds in all.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from datetime import date

from hypothesis import given, settings
from hypothesis import strategies as st

from lmforge.data.curate.steps.pii import PiiAnonymiser, find_pii

FAST = settings(max_examples=60, derandomize=True, deadline=None, database=None)

IBAN_REGISTRY = (
    "AD:4!n4!n12!c AE:3!n16!n AL:8!n16!c AT:5!n11!n AZ:4!a20!c BA:3!n3!n8!n2!n BE:3!n7!n2!n "
    "BG:4!a4!n2!n8!c BH:4!a14!c BI:5!n5!n11!n2!n BR:8!n5!n10!n1!a1!c BY:4!c4!n16!c CH:5!n12!c "
    "CR:4!n14!n CY:3!n5!n16!c CZ:4!n16!n DE:8!n10!n DJ:5!n5!n11!n2!n DK:4!n9!n1!n DO:4!c20!n "
    "EE:2!n14!n EG:4!n4!n17!n ES:4!n4!n1!n1!n10!n FI:3!n11!n FK:2!a12!n FO:4!n9!n1!n "
    "FR:5!n5!n11!c2!n GB:4!a6!n8!n GE:2!a16!n GI:4!a15!c GL:4!n9!n1!n GR:3!n4!n16!c GT:4!c20!c "
    "HN:4!a20!n HR:7!n10!n HU:3!n4!n1!n15!n1!n IE:4!a6!n8!n IL:3!n3!n13!n IQ:4!a3!n12!n "
    "IS:4!n2!n6!n10!n IT:1!a5!n5!n12!c JO:4!a4!n18!c KW:4!a22!c KZ:3!n13!c LB:4!n20!c LC:4!a24!c "
    "LI:5!n12!c LT:5!n11!n LU:3!n13!c LV:4!a13!c LY:3!n3!n15!n MC:5!n5!n11!c2!n MD:2!c18!c "
    "ME:3!n13!n2!n MK:3!n10!c2!n MN:4!n12!n MR:5!n5!n11!n2!n MT:4!a5!n18!c MU:4!a2!n2!n12!n3!n3!a "
    "NI:4!a20!n NL:4!a10!n NO:4!n6!n1!n OM:3!n16!c PK:4!a16!c PL:8!n16!n PS:4!a21!c PT:4!n4!n11!n2!n "
    "QA:4!a21!c RO:4!a16!c RS:3!n13!n2!n RU:9!n5!n15!c SA:2!n18!c SC:4!a2!n2!n16!n3!a SD:2!n12!n "
    "SE:3!n16!n1!n SI:5!n8!n2!n SK:4!n6!n10!n SM:1!a5!n5!n12!c SO:4!n3!n12!n ST:4!n4!n11!n2!n "
    "SV:4!a20!n TL:3!n14!n2!n TN:2!n3!n13!n2!n TR:5!n1!n16!c UA:6!n19!c VA:3!n15!n VG:4!a16!n "
    "XK:4!n10!n2!n YE:4!a4!n18!c"
)
BBAN_FORMATS = dict(entry.split(":") for entry in IBAN_REGISTRY.split())
"""BBAN format per country, SWIFT IBAN Registry release 101: `4!n` four digits, `a` upper-case
letters, `c` upper-case letters or digits."""
ALPHABETS = {
    "n": "0123456789",
    "a": "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "c": "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ",
}

CARD_SCHEMES = {  # name: (prefix ranges, lengths), the IIN table of Wikipedia's "Payment card number"
    "visa": (["4"], [13, 16, 19]),
    "mastercard": (["51-55", "2221-2720"], [16]),
    "amex": (["34", "37"], [15]),
    "discover": (["6011", "644-649", "65", "622126-622925"], [16, 17, 18, 19]),
    "jcb": (["3528-3589"], [16, 17, 18, 19]),
    "diners": (["36", "300-305", "38-39"], [14, 15, 16, 17, 18, 19]),
    "unionpay": (["62"], [16, 17, 18, 19]),
    "maestro": (["50", "56-69"], [13, 14, 15, 16, 17, 18, 19]),  # and 12, left out (`CARD_SCHEMES`)
    "mir": (["2200-2204"], [16, 17, 18, 19]),
}
OUTSIDE_EVERY_SCHEME = "1789"
"""Leading digits no scheme above issues from (millisecond timestamps begin with 1, ISBNs with 9);
0 too, but a 0 and digit groups is a national phone number."""


STEP = PiiAnonymiser()


def anonymise(text: str) -> str:
    [out] = STEP.apply({"id": "d", "text": text, "source": "t", "metadata": {}}, Counter())
    return out["text"]


def wrong_in_context(written: str, placeholder: str, befores: list[str], afters: list[str]) -> list[str]:
    """`written` with every text before it and every text after it (paired in turn, the shorter list
    cycled): the texts not anonymised to the same text with `placeholder` in its place (a
    placeholder equal to `written`: left alone)."""
    pairs = [
        (befores[i % len(befores)], afters[i % len(afters)]) for i in range(max(len(befores), len(afters)))
    ]
    texts = [(before + written + after, before + placeholder + after) for before, after in pairs]
    return [text for text, expected in texts if anonymise(text) != expected]


def mod97(text: str) -> int:
    """Letters as 10-35, then the decimal number mod 97 (ISO 7064 MOD 97-10)."""
    return int("".join(str(int(char, 36)) for char in text)) % 97


def iban_of(country: str, bban: str) -> str:
    return f"{country}{98 - mod97(bban + country + '00'):02d}{bban}"


def luhn_digit(body: str) -> str:
    """The check digit that makes `body + digit` pass Luhn: double every second digit from the right."""
    total = sum(sum(divmod(int(d) * 2, 10)) if i % 2 == 0 else int(d) for i, d in enumerate(reversed(body)))
    return str(-total % 10)


def grouped(compact: str, separator: str, sizes: list[int] | None = None) -> str:
    """`compact` in groups of `sizes` (default 4s, the last one shorter) joined by `separator`."""
    sizes = sizes or [4] * (len(compact) // 4 + 1)
    groups, start = [], 0
    for size in sizes:
        groups.append(compact[start : start + size])
        start += size
    return separator.join(group for group in groups if group)


@st.composite
def bbans(draw: st.DrawFn, country: str) -> str:
    fields = re.findall(r"(\d+)!?([nac])", BBAN_FORMATS[country])
    return "".join(draw(st.text(ALPHABETS[kind], min_size=int(n), max_size=int(n))) for n, kind in fields)


AFTER_IBAN = [" EUR", " PLN", " CHF", " GBP", " A", " I", " a", " BIC", " IBAN", " NOTE"]  # currency, word
AFTER_IBAN += [" 2024", " 100,00", ".", ",", ";", ")", ":", "\n", ""]  # a number, punctuation, end of text
BEFORE_IBAN = ["", "IBAN ", "IBAN: ", "Konto ", "(", "Überweisung an "]
SEPARATORS = ["", " ", "-"]


@settings(FAST, max_examples=4)
@given(data=st.data())
def test_valid_ibans_of_every_registry_country_are_replaced_whole(data):
    for country in sorted(BBAN_FORMATS):
        compact = iban_of(country, data.draw(bbans(country)))
        for separator in SEPARATORS:
            assert not wrong_in_context(grouped(compact, separator), "<IBAN>", BEFORE_IBAN, AFTER_IBAN)


def typo(data: st.DataObject, written: str) -> str:
    """A digit changed (MOD 97-10 catches every such substitution), or a character dropped or added,
    in the written IBAN, so that its groups keep their places (`HR12 001 0051 8630 0016`)."""
    kind = data.draw(st.sampled_from(["substitute", "drop", "add"]))
    places = [
        i for i, char in enumerate(written) if char.isalnum() and i >= (2 if kind == "substitute" else 5)
    ]
    if kind == "substitute":
        at = data.draw(st.sampled_from([i for i in places if written[i].isdigit()]))
        return written[:at] + str((int(written[at]) + data.draw(st.integers(1, 9))) % 10) + written[at + 1 :]
    at = data.draw(st.sampled_from(places))
    return written[:at] + written[at + 1 :] if kind == "drop" else written[:at] + "7" + written[at:]


@settings(FAST, max_examples=80)
@given(data=st.data())
def test_ibans_with_a_typo_are_left_alone_whole(data):
    """Not an IBAN, and not a phone or card number made of its digit groups either (module docstring).
    Not followed by a one-character word: that completes an IBAN missing a character, and one time
    in 97 its checksum then passes (an IBAN, as far as any checker can tell)."""
    country = data.draw(st.sampled_from(sorted(BBAN_FORMATS)))
    compact = iban_of(country, data.draw(bbans(country)))
    afters = [after for after in AFTER_IBAN if not re.fullmatch(r" [0-9A-Z]", after)]
    for separator in SEPARATORS:
        wrong = typo(data, grouped(compact, separator))
        assert not wrong_in_context(wrong, wrong, BEFORE_IBAN, afters)


@st.composite
def card_numbers(draw: st.DrawFn, scheme: str) -> str:
    ranges, lengths = CARD_SCHEMES[scheme]
    low, _, high = draw(st.sampled_from(ranges)).partition("-")
    prefix = str(draw(st.integers(int(low), int(high or low))))
    length = draw(st.sampled_from(lengths))
    body = prefix + "".join(
        draw(st.text("0123456789", min_size=length - len(prefix) - 1, max_size=length - len(prefix) - 1))
    )
    return body + luhn_digit(body)


def issued(digits: str) -> bool:
    """A card number: a scheme's prefix and length (the table above), and the Luhn check digit."""
    for ranges, lengths in CARD_SCHEMES.values():
        bounds = (prefix.partition("-") for prefix in ranges)
        if len(digits) in lengths and any(
            int(a) <= int(digits[: len(a)]) <= int(b or a) for a, _, b in bounds
        ):
            return luhn_digit(digits[:-1]) == digits[-1]
    return False


def chinese_id(number: str) -> bool:
    """GB 11643: a birth date from 1900 at digits 7-14 and the ISO 7064 MOD 11-2 check character.
    An 18-digit card number can be one too, and then it is an ID (`PII_TYPES` order)."""
    try:
        born = date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        return False
    check = (12 - sum(int(d) * (2 ** (17 - i) % 11) for i, d in enumerate(number[:17])) % 11) % 11
    return len(number) == 18 and born.year >= 1900 and number[17] == "0123456789X"[check]


def written_card(number: str, separator: str) -> str:
    """The groupings printed on cards: 4-6-5 (Amex, 15), 4-6-4 (Diners, 14), else fours."""
    if not separator:
        return number
    sizes = (
        {15: [4, 6, 5], 14: [4, 6, 4]}.get(len(number)) if number[:2] in ("34", "37", "36", "30") else None
    )
    return grouped(number, separator, sizes)


AFTER_CARD = ["", ".", ",", " paid.", " exp 12/27", " (Visa)", "\n", " EUR"]
BEFORE_CARD = ["", "Card ", "Karte: ", "(", "卡号"]
AFTER_CARD_DIGITS = [" 12/27", " 123 12/2027"]
"""An expiry date or code after the number: after 16 digits it may read as the last group of a
17- to 19-digit card, and one time in ten that passes Luhn too; then it goes with the card (card
data either way). The card's own digits go in every case. The other way round, a number with a
wrong check digit is kept unless its groups up to one of its separators make a card (the `trim`
of `PiiDetector`: `3020 0000 0000 0000` in `3020 0000 0000 0000 6`)."""


@settings(FAST, max_examples=25)
@given(data=st.data())
def test_cards_of_each_scheme_are_replaced_and_kept_with_a_wrong_check_digit(data):
    for scheme in sorted(CARD_SCHEMES):
        number = data.draw(card_numbers(scheme))
        wrong = number[:-1] + str((int(number[-1]) + data.draw(st.integers(1, 9))) % 10)
        if chinese_id(number) or chinese_id(wrong):
            continue
        for separator in SEPARATORS:
            written = written_card(number, separator)
            assert not wrong_in_context(written, "<CARD>", BEFORE_CARD, AFTER_CARD)
            for after in AFTER_CARD_DIGITS:
                taken = re.sub(r"^ \d+", "", after)
                assert anonymise(f"Card {written}{after}") in (f"Card <CARD>{after}", f"Card <CARD>{taken}")
            written = written_card(wrong, separator)
            cuts = [cut for cut in range(len(written)) if written[cut] == separator]
            if any(issued(re.sub(r"\D", "", written[:cut])) for cut in cuts):
                continue
            short_last_group = separator and len(wrong) % 4  # nothing after it belongs to the number
            afters = AFTER_CARD + (AFTER_CARD_DIGITS if short_last_group else [])
            assert not wrong_in_context(written, written, BEFORE_CARD, afters)


def isbn13(data: st.DataObject) -> str:
    """978/979, nine digits, the ISBN-13 check digit (weights 1, 3); hyphenated as printed or not."""
    body = data.draw(st.sampled_from(["978", "979"])) + data.draw(
        st.text("0123456789", min_size=9, max_size=9)
    )
    check = str(-sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(body)) % 10)
    if not data.draw(st.booleans()):
        return body + check
    publisher = data.draw(st.integers(2, 7))
    return f"{body[:3]}-{body[3]}-{body[4 : 4 + publisher]}-{body[4 + publisher :]}-{check}"


def order_number(data: st.DataObject) -> str:
    """A Luhn-valid number of card length from a leading digit no scheme issues from (not 18
    digits: the Chinese ID's shape), unbroken or in fours."""
    length = data.draw(st.sampled_from([13, 14, 15, 16, 17, 19]))
    body = data.draw(st.sampled_from(OUTSIDE_EVERY_SCHEME)) + data.draw(
        st.text("0123456789", min_size=length - 2, max_size=length - 2)
    )
    return grouped(body + luhn_digit(body), data.draw(st.sampled_from(["", "", " "])))


def timestamp(data: st.DataObject) -> str:
    """Unix time in seconds, milliseconds, microseconds or nanoseconds, 2001 to 2033."""
    digits = data.draw(st.sampled_from([10, 13, 16, 19]))
    return str(data.draw(st.integers(10 ** (digits - 1), 2 * 10 ** (digits - 1) - 1)))


@settings(FAST, max_examples=200)
@given(data=st.data())
def test_long_digit_runs_that_are_not_cards_are_kept(data):
    kind = data.draw(st.sampled_from(["timestamp", "isbn", "order"]))
    value = {"timestamp": timestamp, "isbn": isbn13, "order": order_number}[kind](data)
    before = data.draw(
        st.sampled_from(
            {
                "timestamp": ["created_at=", '{"ts": ', "at "],
                "isbn": ["ISBN ", "ISBN-13: ", "("],
                "order": ["order #", "Order no. ", "Bestellnummer "],
            }[kind]
        )
    )
    text = f"{before}{value}{data.draw(st.sampled_from(['', ',', '}', ' shipped.', ')']))}"
    assert anonymise(text) == text


@settings(FAST, max_examples=100)
@given(data=st.data())
def test_phone_like_digit_runs_are_never_cards(data):
    """International numbers written unbroken, `00` or `+` and a country code, 13-17 digits: a
    phone number or nothing, never a card."""
    number = data.draw(st.sampled_from(["00", "+"])) + data.draw(
        st.sampled_from(["49", "33", "86", "44", "7"])
    )
    number += data.draw(st.text("0123456789", min_size=13 - len(number), max_size=17 - len(number)))
    assert [kind for _, _, kind in find_pii(f"Tel. {number} bitte") if kind == "card"] == []


IDN_LABELS = ["bücher", "пример", "例子", "δοκιμή", "münchen", "उदाहरण", "ไทย", "مثال", "hygge-ø"]
PUNYCODE_LABELS = [word.encode("idna").decode("ascii") for word in IDN_LABELS]
"""The reference encoding: Python's IDNA codec (`bücher` is `xn--bcher-kva`)."""
ASCII_LABELS = ["example", "mail", "uni-bonn", "a1", "x", *PUNYCODE_LABELS]
IDN_TLDS = ["рф", "中国", "भारत", "ไทย", "ελ"]


def domain(data: st.DataObject) -> str:
    """Internationalised labels first, as written, then ASCII or punycode ones, then an ASCII,
    punycode or (only after an internationalised label, as the registries of `рф`, `中国`, `भारत`
    require) internationalised top-level domain: the order the `_IDN_LABEL` docstring gives."""
    written = data.draw(st.lists(st.sampled_from(IDN_LABELS), max_size=2))
    tld = data.draw(st.sampled_from(["com", "de", "co.uk", "museum", "idn", "idn-punycode"]))
    if tld == "idn":
        return ".".join(
            [*written, data.draw(st.sampled_from(IDN_LABELS)), data.draw(st.sampled_from(IDN_TLDS))]
        )
    labels = data.draw(st.lists(st.sampled_from(ASCII_LABELS), min_size=0 if written else 1, max_size=2))
    if tld == "idn-punycode":
        tld = data.draw(st.sampled_from(IDN_TLDS)).encode("idna").decode("ascii")
    return ".".join([*written, *labels, tld])


@settings(FAST, max_examples=80)
@given(data=st.data())
def test_emails_with_idn_and_punycode_domains_are_replaced_whole(data):
    local = data.draw(
        st.from_regex(r"[a-z][a-z0-9]{0,7}(\.[a-z0-9]{1,6})?(\+[a-z0-9]{1,6})?", fullmatch=True)
    )
    address = f"{local}@{domain(data)}"
    before = ["", "Mail ", "(", "<", "mailto:", "E-Mail: ", '"']
    assert not wrong_in_context(
        address, "<EMAIL>", before, ["", " today", ")", ">", ".", ",", ";", '"', "\n"]
    )


def ipv6_written(data: st.DataObject, address: ipaddress.IPv6Address) -> str:
    """Compressed, exploded, upper case, or with its last 32 bits as a dotted quad."""
    form = data.draw(st.sampled_from(["compressed", "exploded", "upper", "dotted"]))
    if form == "dotted":
        return (
            ":".join(address.exploded.split(":")[:6])
            + ":"
            + str(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        )
    return {
        "compressed": address.compressed,
        "exploded": address.exploded,
        "upper": address.compressed.upper(),
    }[form]


BEFORE_IP = ["", "host ", "from ", "(", "来自", "addr="]
AFTER_IP = ["", " ok", ")", ",", ".", ";", ": connection refused", "\n", "的流量"]


@settings(FAST, max_examples=100)
@given(data=st.data(), address=st.ip_addresses(v=6))
def test_ipv6_in_its_written_forms_is_replaced_whole_or_skipped_by_the_rule(data, address):
    """The unspecified `::` is skipped; every other address is replaced, and a prefix length, zone
    id or port written after it is kept (the `_ipv6` docstring)."""
    written = ipv6_written(data, address)
    for suffix in ["", "/64", "/128", "%eth0", "%25en0", "%3"]:
        kept = written + suffix if address.is_unspecified else "<IP>" + suffix
        assert not wrong_in_context(written + suffix, kept, BEFORE_IP, AFTER_IP)
    kept = written if address.is_unspecified else "<IP>"
    assert not wrong_in_context(f"[{written}]:8080", f"[{kept}]:8080", BEFORE_IP, AFTER_IP)


@settings(FAST, max_examples=60)
@given(address=st.ip_addresses(v=4))
def test_ipv4_with_prefix_length_or_port_is_replaced_whole(address):
    """Every address but the unspecified `0.0.0.0` (the `_ipv4` docstring)."""
    for suffix in ["", "/24", "/32", ":8080"]:
        kept = f"{address}{suffix}" if address.is_unspecified else f"<IP>{suffix}"
        assert not wrong_in_context(f"{address}{suffix}", kept, BEFORE_IP, AFTER_IP)
