"""PII anonymisation (guide section 6, GDPR): personal data replaced by typed placeholders.

A regex tier finds what has a shape, and validates it where the shape allows so that ordinary
numbers survive: e-mail, phone (international `+CC ...` and common national formats), IPv4 and
IPv6 (checked by `ipaddress`; see `_ipv6` for the two things skipped), payment cards (13-19
digits, Luhn), IBAN (ISO 13616 mod-97) and Chinese resident ID numbers (GB 11643: birth date and
check character). Person names need a model: `NameTagger` is the hook for one, and none ships yet.

Placeholders are `<EMAIL>`, `<PHONE>`, `<IP>` (v4 and v6), `<CARD>`, `<IBAN>`, `<CN_ID>` and
`<PERSON>`: plain ASCII a tokenizer keeps readable, and typed, so a model still sees that an
address was there (replacing rather than deleting keeps sentences fluent, as datatrove and
Presidio do). Types are tried in `PII_TYPES` order and a later match that overlaps an earlier
one is dropped: a card, IBAN or ID number is never half-eaten by the looser phone pattern.
"""

from __future__ import annotations

import ipaddress
import re
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
TAGS: dict[str, str] = {"email": "EMAIL", "iban": "IBAN", "cn_id": "CN_ID", "card": "CARD", "ipv6": "IP",
                        "ipv4": "IP", "phone": "PHONE", "person": "PERSON"}
"""Placeholder tag per type; the counters and `metadata["pii"]` keep v4 and v6 apart."""

# Numbers are delimited by ASCII letters and digits only: `\b` would glue them to the CJK text
# they are written against ("请拨打13912345678").
_START = r"(?<![0-9A-Za-z])"
_END = r"(?![0-9A-Za-z])"
_EMAIL = re.compile(r"(?<![A-Za-z0-9.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@"
                    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,24}" + _END)
_IBAN = re.compile(_START + r"[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?" + _END)
_CN_ID = re.compile(_START + r"\d{17}[\dXx]" + _END)
_CARD = re.compile(r"(?<![0-9A-Za-z+])(?:\d{13,19}"      # contiguous
                   r"|\d{4}(?:[ -]\d{4}){2}[ -]\d{1,4}(?:[ -]\d{1,3})?"  # 4-4-4-x, up to 19
                   r"|\d{4}[ -]\d{6}[ -]\d{4,5})" + _END)  # Amex / Diners 4-6-5, 4-6-4
_IPV6 = re.compile(r"(?<![0-9A-Za-z:.])(?:[0-9A-Fa-f]{0,4}:){2,7}"
                   r"(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{1,4})?(?![0-9A-Za-z:]|\.\d)")
_IPV4 = re.compile(r"(?<![0-9A-Za-z.])(?:\d{1,3}\.){3}\d{1,3}(?![0-9A-Za-z]|\.\d)")
_PHONE = re.compile(r"(?<![0-9A-Za-z+])(?:"
                    r"\+\d{1,15}(?:(?:[ .-]?\(\d{1,4}\)[ .-]?|[ .-])\d{1,10}(?:[ .-]\d{1,10}){0,5})?"  # +CC
                    r"|\(\d{3}\) ?\d{3}[ .-]\d{4}|\d{3}[.-]\d{3}[.-]\d{4}"  # North American
                    r"|1[3-9]\d(?:[ -]?\d{4}){2}"                           # mainland China mobile
                    r"|(?:\(0\d{1,4}\)|0\d{1,4})(?:[ ./-]\d{2,8}){1,4}|0\d{8,11}"  # national, trunk 0
                    r")" + _END)
_DATE_START = re.compile(r"\d{1,2}([./-])\d{1,2}\1(?:19|20)\d\d")
"""A date (d.m.yyyy or m/d/yyyy) opening a phone candidate: a date followed by another number."""
_NON_DIGIT = re.compile(r"\D")
_CN_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CN_ID_CHECK = "10X98765432"

PHONE_DIGITS = (9, 15)
"""A phone number has 9 to 15 digits: E.164's maximum is 15, and 9 is the shortest national
number with its trunk prefix or country code (Austria `01 1234567`); fewer are plain numbers."""


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
    return luhn_valid(_NON_DIGIT.sub("", candidate))


def _iban(candidate: str) -> bool:
    """ISO 13616: move country and check digits to the end, read letters as 10-35, mod 97 = 1."""
    compact = candidate.replace(" ", "")
    if not 15 <= len(compact) <= 34:  # from Norway's 15 to the standard's maximum
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
    try:
        ipaddress.IPv4Address(candidate)  # octets <= 255, no leading zeros
    except ValueError:
        return False
    return True


def _ipv6(candidate: str) -> bool:
    """Any valid IPv6 address but the unspecified `::`, which names no host (and is what a bare
    `::` in prose or code is). No block is skipped: loopback `::1`, link-local `fe80::1`,
    documentation `2001:db8::1`, multicast, unique-local and unassigned or reserved blocks
    (`dead::beef`) are all written in logs and configs next to a person's machine, and which
    blocks are assigned changes over time. What only looks like an address is not valid:
    times (`12:30:45`), MAC addresses (6 groups), C++ `std::vector`, colon-separated hashes
    (more than 8 groups). A code path made only of hex letters (`a::b`) is a valid address and
    is replaced. The one common valid look-alike, a slice such as `a[1::2]`, is left out by its
    place in the text (`_in_subscript`), not by its value."""
    try:
        address = ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    return not address.is_unspecified


_SUBSCRIPT = re.compile(r"[\w)\]]\[[^\[\]\n]{0,40}\Z")
"""An open subscript, `name[` (or `f(x)[`, `a[0][`) with no bracket after it on the same line."""


def _in_subscript(text: str, start: int, end: int) -> bool:
    """Inside a subscript and closed by `]` or `,`: a slice (`a[1::2]`, `m[:, ::2]`), not an address.
    A URL's `http://[2001:db8::1]:80` opens its bracket after `/`, not after a name."""
    return text[end:end + 1] in ("]", ",") and _SUBSCRIPT.search(text, max(0, start - 42), start) is not None


def _phone(candidate: str) -> bool:
    digits = len(_NON_DIGIT.sub("", candidate))
    return PHONE_DIGITS[0] <= digits <= PHONE_DIGITS[1] and not _DATE_START.match(candidate)


@dataclass(frozen=True)
class PiiDetector:
    """A candidate pattern, the check a candidate must pass, a substring every hit contains
    (a cheap `in` test skips the regex on most documents), whether a candidate that fails
    its check still keeps later types off its text: an IBAN with a typo is neither a card
    number nor a phone number, however its digit groups happen to checksum; and `skip(text,
    start, end)`, for a valid value that its place in the text shows to be something else."""

    pattern: re.Pattern[str]
    valid: Callable[[str], bool]
    needs: str = ""
    exclusive: bool = False
    skip: Callable[[str, int, int], bool] | None = None


DETECTORS: dict[PiiType, PiiDetector] = {
    "email": PiiDetector(_EMAIL, lambda _: True, needs="@"),
    "iban": PiiDetector(_IBAN, _iban, exclusive=True),
    "cn_id": PiiDetector(_CN_ID, _cn_id),
    "card": PiiDetector(_CARD, _card),
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
            valid = detector.valid(match.group()) and not (detector.skip and detector.skip(text, start, end))
            if valid:
                found.append((start, end, kind))
            if valid or detector.exclusive:
                claimed.append((start, end))
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
