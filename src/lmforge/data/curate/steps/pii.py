"""PII anonymisation (guide section 6, GDPR): personal data replaced by typed placeholders.

A regex tier finds what has a shape, and validates it where the shape allows so that ordinary
numbers survive: e-mail (ASCII local part; ASCII, internationalised or punycode domain), phone
(international `+CC ...` and common national formats), IPv4 and IPv6 (checked by `ipaddress`;
see `_ipv4` and `_ipv6` for what is skipped), payment cards (a scheme's issuer prefix and length,
and Luhn: see `CARD_SCHEMES`), IBAN (the registry length of its country and ISO 13616 mod-97: see
`IBAN_LENGTHS`) and Chinese resident ID numbers (GB 11643: birth date and check character).
Person names need a model: `NameTagger` is the hook for one, and none ships yet.

Placeholders are `<EMAIL>`, `<PHONE>`, `<IP>` (v4 and v6), `<CARD>`, `<IBAN>`, `<CN_ID>` and
`<PERSON>`: plain ASCII a tokenizer keeps readable, and typed, so a model still sees that an
address was there (replacing rather than deleting keeps sentences fluent, as datatrove and
Presidio do). Types are tried in `PII_TYPES` order and a later match that overlaps an earlier
one is dropped: a card, IBAN or ID number is never half-eaten by the looser phone pattern. An
IBAN-shaped run that fails its check (a typo) and a card-length digit run that is no card (an
order number) are left alone whole, not cut into a phone number (`PiiDetector.exclusive`).
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import date
from typing import Literal, Protocol

from pydantic import field_validator

from lmforge.config import Config

PiiType = Literal["email", "iban", "cn_id", "card", "ipv6", "ipv4", "phone"]
PII_TYPES: tuple[PiiType, ...] = ("email", "iban", "cn_id", "card", "ipv6", "ipv4", "phone")
"""Regex-tier types, in the order they claim text."""
TAGS: dict[str, str] = {
    "email": "EMAIL",
    "iban": "IBAN",
    "cn_id": "CN_ID",
    "card": "CARD",
    "ipv6": "IP",
    "ipv4": "IP",
    "phone": "PHONE",
    "person": "PERSON",
}
"""Placeholder tag per type; the counters and `metadata["pii"]` keep v4 and v6 apart."""

# Numbers are delimited by ASCII letters and digits only: `\b` would glue them to the CJK text
# they are written against ("请拨打13912345678").
_START = r"(?<![0-9A-Za-z])"
_END = r"(?![0-9A-Za-z])"


def _combining_marks() -> str:
    """The combining marks (Unicode category M) of the Basic Multilingual Plane as the ranges of
    a character class: `\\w` leaves them out, and Indic and Thai domain names are written with
    them (`भारत`)."""
    ranges: list[list[int]] = []
    for code in range(0x300, 0x10000):
        if unicodedata.category(chr(code)).startswith("M"):
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1][1] = code
            else:
                ranges.append([code, code])
    return "".join(f"{chr(low)}-{chr(high)}" for low, high in ranges)


_MARKS = _combining_marks()
_ASCII_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
"""A domain label in ASCII, punycode (`xn--bcher-kva`) included."""
_IDN_LABEL = rf"(?=[\w-]*[^\W\x00-\x7f])[^\W_](?:[\w{_MARKS}-]*(?:[^\W_]|[{_MARKS}]))?"
"""An internationalised label, with a letter outside ASCII (`bücher`, `пример`, `例子`, `भारत`).
Such labels come first in a domain, and an internationalised top-level domain only after one
(`пример.рф`, as its registry requires): text glued after an address's full stop in Chinese or
Japanese (`x@example.com.谢谢。`) is then not read as more labels. The cost: an ASCII label before
an internationalised one (`x@mail.bücher.de`) is not found."""
_ASCII_TLD = r"(?:xn--[A-Za-z0-9-]*[A-Za-z0-9]|[A-Za-z]{2,24})" + _END
"""Punycode (`xn--p1ai`) or ASCII (`com`), delimited like numbers so that CJK text may follow."""
_IDN_TLD = rf"(?:[^\W\d_A-Za-z]|[{_MARKS}]){{2,24}}(?![\w{_MARKS}])"
"""An internationalised top-level domain (`рф`, `中国`, `भारत`)."""
_EMAIL = re.compile(
    r"(?<![A-Za-z0-9.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@"
    rf"(?:{_IDN_LABEL}\.)*(?:{_IDN_LABEL}\.{_IDN_TLD}|(?:{_ASCII_LABEL}\.)*(?<=\.){_ASCII_TLD})"
)
_CN_ID = re.compile(_START + r"\d{17}[\dXx]" + _END)
_CARD = re.compile(
    r"(?<![0-9A-Za-z+])(?:\d{13,19}"  # contiguous
    r"|\d{4}(?:[ -]\d{4}){2}[ -](?:\d{4}[ -]\d{1,3}|\d{1,4})"  # 4-4-4-x, up to 19: a short group ends it
    r"|\d{4}[ -]\d{6}[ -]\d{4,5})" + _END  # Amex / Diners 4-6-5, 4-6-4
)
_IPV6 = re.compile(  # a colon after it may end a clause (`2001:db8::1: refused`), not start a group
    r"(?<![0-9A-Za-z:.])(?:[0-9A-Fa-f]{1,4}:|(?<!::):){2,7}"  # never three colons in a row
    r"(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{1,4}|(?<=::))(?![0-9A-Za-z]|:[0-9A-Za-z:]|\.\d)"
)
_IPV4 = re.compile(r"(?<![0-9A-Za-z.])(?:\d{1,3}\.){3}\d{1,3}(?![0-9A-Za-z]|\.\d)")
_PHONE = re.compile(
    r"(?<![0-9A-Za-z+])(?:"
    r"\+\d{1,15}(?:(?:[ .-]?\(\d{1,4}\)[ .-]?|[ .-])\d{1,10}(?:[ .-]\d{1,10}){0,5})?"  # +CC
    r"|\(\d{3}\) ?\d{3}[ .-]\d{4}|\d{3}[.-]\d{3}[.-]\d{4}"  # North American
    r"|1[3-9]\d(?:[ -]?\d{4}){2}"  # mainland China mobile
    r"|(?:\(0\d{1,4}\)|0\d{1,4})(?:[ ./-]\d{2,8}){1,4}|0\d{8,11}"  # national, trunk 0
    r")" + _END
)
_DATE_START = re.compile(r"\d{1,2}([./-])\d{1,2}\1(?:19|20)\d\d")
"""A date (d.m.yyyy or m/d/yyyy) opening a phone candidate: a date followed by another number."""
_NON_DIGIT = re.compile(r"\D")
_CN_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CN_ID_CHECK = "10X98765432"

PHONE_DIGITS = (9, 15)
"""A phone number has 9 to 15 digits: E.164's maximum is 15, and 9 is the shortest national
number with its trunk prefix or country code (Austria `01 1234567`); fewer are plain numbers."""


_IBAN_REGISTRY = (
    "AD24 AE23 AL28 AT20 AZ28 BA20 BE16 BG22 BH22 BI27 BR29 BY28 CH21 CR22 CY28 CZ24 DE22 DJ27 DK18 DO28 "
    "EE20 EG29 ES24 FI18 FK18 FO18 FR27 GB22 GE22 GI23 GL18 GR27 GT28 HN28 HR21 HU28 IE22 IL23 IQ23 IS26 "
    "IT27 JO30 KW30 KZ20 LB28 LC32 LI21 LT20 LU20 LV21 LY25 MC27 MD24 ME22 MK19 MN20 MR27 MT31 MU30 NI28 "
    "NL18 NO15 OM23 PK24 PL28 PS29 PT25 QA29 RO24 RS22 RU33 SA24 SC31 SD18 SE24 SI19 SK24 SM27 SO23 ST25 "
    "SV28 TL23 TN24 TR26 UA29 VA22 VG24 XK20 YE30"
)
IBAN_LENGTHS: dict[str, int] = {entry[:2]: int(entry[2:]) for entry in _IBAN_REGISTRY.split()}
"""IBAN length per country: the SWIFT IBAN Registry, release 101 (89 countries; the table of
python-stdnum's `stdnum/iban.dat`, generated from the registry). A country has one length."""
_IBAN_SEPARATOR = re.compile(r"[ -]")


def _iban_pattern() -> re.Pattern[str]:
    """An IBAN is written unbroken or with a space or dash between any two characters, so only
    its country's length tells where it ends: one alternative per registry length takes exactly
    that many characters and then needs a delimiter, so the token after an IBAN (`EUR`, `A`) is
    never read as its tail. Failing that, an IBAN-shaped run (a registry country, check digits,
    then from one character fewer than the shortest IBAN to one more than the longest) is still
    a candidate: `_iban` rejects it, and as the detector is exclusive, an IBAN with a typo, a
    missing or an extra character keeps the looser types off its digits."""
    countries: dict[int, list[str]] = {}
    for country, length in IBAN_LENGTHS.items():
        countries.setdefault(length, []).append(country)
    char = r"[ -]?[0-9A-Z]"
    exact = [
        f"(?:{'|'.join(codes)})\\d\\d(?:{char}){{{length - 4}}}{_END}" for length, codes in countries.items()
    ]
    fewest, most = min(countries) - 5, max(countries) - 3
    shaped = f"(?:{'|'.join(IBAN_LENGTHS)})\\d\\d(?:{char}){{{fewest},{most}}}{_END}"
    return re.compile(_START + r"(?=[A-Z]{2}\d\d)(?:" + "|".join([*exact, shaped]) + ")")


_IBAN = _iban_pattern()


@dataclass(frozen=True)
class CardScheme:
    """A payment card scheme: its issuer prefixes, inclusive ranges of leading digits written
    `51-55` (or one prefix, `4`), and the lengths of its numbers."""

    prefixes: str
    lengths: Collection[int]

    def issued(self, digits: str) -> bool:
        """`digits` has one of the scheme's lengths and starts with one of its prefixes."""
        if len(digits) not in self.lengths:
            return False
        ranges = (part.partition("-") for part in self.prefixes.split())
        return any(int(low) <= int(digits[: len(low)]) <= int(high or low) for low, _, high in ranges)


CARD_SCHEMES: dict[str, CardScheme] = {
    "visa": CardScheme("4", (13, 16, 19)),
    "mastercard": CardScheme("51-55 2221-2720", (16,)),
    "amex": CardScheme("34 37", (15,)),
    "discover": CardScheme("6011 644-649 65 622126-622925", range(16, 20)),
    "jcb": CardScheme("3528-3589", range(16, 20)),
    "diners": CardScheme("36 300-305 38-39", range(14, 20)),
    "unionpay": CardScheme("62", range(16, 20)),
    "maestro": CardScheme("50 56-69", range(13, 20)),
    "mir": CardScheme("2200-2204", range(16, 20)),
}
"""Issuer prefixes (IIN ranges) and lengths per scheme, from the IIN table of Wikipedia's "Payment
card number" (checked against braintree/credit-card-type). A digit run of card length outside
them is a timestamp (milliseconds begin with 1), an ISBN (978, 979) or an order number, not a
card, and stays. Left out: UATP (airline cards, 15 digits from 1: the shape of a timestamp) and
Maestro's 12-digit numbers (the shape of too many other numbers, and below `_CARD`'s 13)."""


def card_scheme(digits: str) -> str | None:
    """The scheme whose prefix and length `digits` has, or None."""
    return next((name for name, scheme in CARD_SCHEMES.items() if scheme.issued(digits)), None)


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum every payment card number carries (ISO/IEC 7812)."""
    total = 0
    for i, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if i % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _card(candidate: str) -> bool:
    """An issued card number: a scheme's prefix and length (`CARD_SCHEMES`), then its Luhn check digit."""
    if card_scheme(_NON_DIGIT.sub("", candidate)) is None:  # a timestamp, an ISBN, an order number
        return False
    return luhn_valid(_NON_DIGIT.sub("", candidate))


def _iban(candidate: str) -> bool:
    """ISO 13616: the registry length of its country; then, with country and check digits moved to
    the end and letters read as 10-35, the number mod 97 is 1."""
    compact = _IBAN_SEPARATOR.sub("", candidate)
    if len(compact) != IBAN_LENGTHS[compact[:2]]:
        return False
    rotated = compact[4:] + compact[:4]
    return int("".join(str(int(char, 36)) for char in rotated)) % 97 == 1


def _cn_id(candidate: str) -> bool:
    """GB 11643-1999: an existing birth date (YYYYMMDD at 7-14) and the ISO 7064 check character."""
    try:
        born = date(int(candidate[6:10]), int(candidate[10:12]), int(candidate[12:14]))
    except ValueError:
        return False
    if born.year < 1900:
        return False
    total = sum(int(char) * weight for char, weight in zip(candidate[:17], _CN_ID_WEIGHTS, strict=True))
    return _CN_ID_CHECK[total % 11] == candidate[17].upper()


def _ipv4(candidate: str) -> bool:
    """A valid address (octets up to 255, no leading zeros) but the unspecified `0.0.0.0`, which
    like `::` names no host (`listen on 0.0.0.0:8080`)."""
    try:
        return not ipaddress.IPv4Address(candidate).is_unspecified
    except ValueError:
        return False


def _ipv6(candidate: str) -> bool:
    """Any valid IPv6 address but the unspecified `::`, which names no host (and is what a bare
    `::` in prose or code is). No block is skipped: loopback `::1`, link-local `fe80::1`,
    documentation `2001:db8::1`, multicast, unique-local, IPv4-mapped (`::ffff:192.0.2.1`) and
    unassigned or reserved blocks (`dead::beef`) are all written in logs and configs next to a
    person's machine, and which blocks are assigned changes over time. The address is replaced
    and what is written after it kept, as it names no host: a prefix length (`2001:db8::/32` gives
    `<IP>/32`), a zone id (`fe80::1%eth0`, an interface of the machine, gives `<IP>%eth0`), a port
    after brackets. What only looks like an address is not valid: times (`12:30:45`), MAC
    addresses (6 groups), C++ `std::vector`, colon-separated hashes (more than 8 groups). A code
    path made only of hex letters (`a::b`) is a valid address and is replaced. The one common
    valid look-alike, a slice such as `a[1::2]`, is left out by its place in the text
    (`_in_subscript`), not by its value."""
    try:
        address = ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    return not address.is_unspecified


_SUBSCRIPT = re.compile(r"[0-9A-Za-z_)\]]\[[^\[\]\n]{0,40}\Z")
"""An open subscript, `name[` (or `f(x)[`, `a[0][`) with no bracket after it on the same line; a
name in ASCII, as in code, so that `来自[2001:db8::1]:80` in Chinese text is an address."""


def _in_subscript(text: str, start: int, end: int) -> bool:
    """Inside a subscript and closed by `]` or `,`: a slice (`a[1::2]`, `m[:, ::2]`), not an address.
    A URL's `http://[2001:db8::1]:80` opens its bracket after `/`, not after a name."""
    return (
        text[end : end + 1] in ("]", ",") and _SUBSCRIPT.search(text, max(0, start - 42), start) is not None
    )


def _phone(candidate: str) -> bool:
    digits = len(_NON_DIGIT.sub("", candidate))
    return PHONE_DIGITS[0] <= digits <= PHONE_DIGITS[1] and not _DATE_START.match(candidate)


@dataclass(frozen=True)
class PiiDetector:
    """A candidate pattern, the check a candidate must pass, a substring every hit contains
    (a cheap `in` test skips the regex on most documents), whether a candidate that fails
    its check still keeps later types off its text: an IBAN with a typo is neither a card
    number nor a phone number, however its digit groups happen to checksum, and a card-length
    digit run that is no card (an order number `1000 0000 0000 08`) is no phone number from its
    second group on; `skip(text, start, end)`, for a valid value that its place in the text
    shows to be something else; and `trim`, the separators at which a candidate that fails its
    check is cut from the right and checked again, longest first: a card's last group may be
    the expiry date or code written after it (`4111 1111 1111 1111 12/27`), not its own."""

    pattern: re.Pattern[str]
    valid: Callable[[str], bool]
    needs: str = ""
    exclusive: bool = False
    skip: Callable[[str, int, int], bool] | None = None
    trim: str = ""

    def fit(self, text: str, start: int, end: int) -> int | None:
        """The end of the longest valid candidate from `start`: the match, or one cut at `trim`."""
        cuts = [end]
        if self.trim:
            cuts += [cut for cut in range(end - 1, start, -1) if text[cut] in self.trim]
        for cut in cuts:
            if self.valid(text[start:cut]) and not (self.skip and self.skip(text, start, cut)):
                return cut
        return None


DETECTORS: dict[PiiType, PiiDetector] = {
    "email": PiiDetector(_EMAIL, lambda _: True, needs="@"),
    "iban": PiiDetector(_IBAN, _iban, exclusive=True),
    "cn_id": PiiDetector(_CN_ID, _cn_id),
    "card": PiiDetector(_CARD, _card, exclusive=True, trim=" -"),
    "ipv6": PiiDetector(_IPV6, _ipv6, needs=":", skip=_in_subscript),
    "ipv4": PiiDetector(_IPV4, _ipv4, needs="."),
    "phone": PiiDetector(_PHONE, _phone),
}


class NameTagger(Protocol):
    """The model tier for person names (e.g. a token classifier from our NER fine-tuning)."""

    def spans(self, text: str) -> list[tuple[int, int]]:
        """(start, end) character offsets of every person name in `text`, end exclusive."""
        ...


NAME_TAGGERS: dict[str, Callable[[], NameTagger]] = {}
"""Name taggers by the name `PiiSettings.names` uses. Empty: no model ships yet, and a name
list would be a fake (it finds the names it lists and misses the rest)."""


class PiiSettings(Config):
    """Settings of the `pii` step."""

    enabled: bool = True
    """Anonymise before anything is stored or trained on (guide section 6, SPEC S1 Privacy)."""
    types: list[PiiType] = list(PII_TYPES)
    """Regex-tier types to replace; the order of `PII_TYPES` decides overlaps, not this list's."""
    placeholder: str = "<{tag}>"
    """Replacement text; `{tag}` becomes EMAIL, PHONE, IP, CARD, IBAN, CN_ID or PERSON."""
    names: str | None = None
    """Name tagger from `NAME_TAGGERS` for person names; None (default) until a model exists."""

    @field_validator("placeholder")
    @classmethod
    def _has_tag(cls, value: str) -> str:
        if "{tag}" not in value:
            raise ValueError("placeholder must contain {tag}, e.g. '<{tag}>'")
        return value

    @field_validator("names")
    @classmethod
    def _known_tagger(cls, value: str | None) -> str | None:
        if value is not None and value not in NAME_TAGGERS:
            known = ", ".join(NAME_TAGGERS) or "none yet"
            raise ValueError(f"unknown name tagger {value!r}; available: {known}")
        return value


Span = tuple[int, int, str]
"""(start, end, type) of one piece of PII."""


def find_pii(text: str, types: Collection[str] = PII_TYPES, names: NameTagger | None = None) -> list[Span]:
    """Non-overlapping PII spans in text order; names first, then `PII_TYPES` order."""
    found: list[Span] = [(a, b, "person") for a, b in names.spans(text)] if names else []
    claimed = [(a, b) for a, b, _ in found]
    for kind in PII_TYPES:
        detector = DETECTORS[kind]
        if kind not in types or detector.needs not in text:
            continue
        for match in detector.pattern.finditer(text):
            start, end = match.span()
            if any(start < b and a < end for a, b in claimed):
                continue
            fit = detector.fit(text, start, end)
            if fit is not None:
                found.append((start, fit, kind))
            if fit is not None or detector.exclusive:
                claimed.append((start, end if fit is None else fit))
    return sorted(found)


def redact(text: str, spans: list[Span], placeholder: str = "<{tag}>") -> str:
    """`text` with each span (sorted, non-overlapping) replaced by its typed placeholder."""
    pieces, pos = [], 0
    for start, end, kind in spans:
        pieces += [text[pos:start], placeholder.format(tag=TAGS[kind])]
        pos = end
    pieces.append(text[pos:])
    return "".join(pieces)


class PiiAnonymiser:
    """Replaces PII with placeholders; counts per type in `counters` (`pii_email`, ...) and in
    `metadata["pii"]` (counts only: the values themselves must not survive anywhere)."""

    name = "pii"

    def __init__(self, settings: PiiSettings | None = None, names: NameTagger | None = None) -> None:
        self.settings = settings or PiiSettings()
        self.types = tuple(t for t in PII_TYPES if t in self.settings.types)
        self.names = names or (NAME_TAGGERS[self.settings.names]() if self.settings.names else None)

    def apply(self, doc: dict, counters: Counter) -> list[dict]:
        if not self.settings.enabled:
            return [doc]
        spans = find_pii(doc["text"], self.types, self.names)
        found = Counter(kind for _, _, kind in spans)
        for kind, count in found.items():
            counters[f"pii_{kind}"] += count
        text = redact(doc["text"], spans, self.settings.placeholder) if spans else doc["text"]
        return [{**doc, "text": text, "metadata": {**doc.get("metadata", {}), "pii": dict(found)}}]
