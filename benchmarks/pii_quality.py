"""PII anonymisation quality: precision and recall per type on generated text, and look-alikes kept.

    python benchmarks/pii_quality.py [--data DIR] [--docs 3000] [--seed 0]

Carrier text: Tatoeba sentences of 21 languages (`langid_tatoeba`, from --data, else
$LMFORGE_DATA, else ../shared/data), three to a document. Into each document go three values,
each in place of a space between two words (or between two CJK characters, with nothing around
it), bare or in brackets or quotes, and followed by what is written after such a value: a
currency or a one-letter word after an IBAN, an expiry date after a card, a prefix length, zone
id or `: connection refused` after an address. Values are PII of every type the regex tier
finds, in the written forms of issue 15 (IBANs of every registry country unbroken or grouped by
spaces or dashes; cards of every scheme in `CARD_SCHEMES`, 13 to 19 digits; e-mail with plus
addresses, subdomains, internationalised and punycode domains; IPv6 compressed, exploded, with
embedded IPv4, prefix lengths and zone ids), and look-alikes that must stay: Unix timestamps,
ISBNs, Luhn-valid order numbers, IBANs and cards with a typo, dates, versions, MAC addresses,
hashes, slices.

A replacement is correct when it covers a planted value of its type exactly. Recall: planted
values replaced whole; precision: replacements that are planted values of their type (one that
cuts into a look-alike or the carrier text counts against it). Look-alikes: the share left
untouched. The seed is printed. Writes benchmarks/results/pii_quality.md.
"""

from __future__ import annotations

import argparse
import csv
import ipaddress
import random
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from realdata import data_dir

from lmforge.data.curate.steps.pii import CARD_SCHEMES, IBAN_LENGTHS, PII_TYPES, find_pii

RESULTS = Path(__file__).parent / "results"
DATA_FILE = Path("langid_tatoeba") / "langid_tatoeba_21lang.tsv"
CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")
WRAPPERS = (("", ""), ("", ""), ("(", ")"), ('"', '"'), ("", ","), ("", "."))
Plant = tuple[str, str, str, str]
"""(kind, text before the value, value, text after it); the value alone is the truth span."""
Span = tuple[int, int, str]

ASCII_LABELS = ("example", "mail", "uni-bonn", "shop24", "x")
IDN_LABELS = ("bücher", "пример", "例子", "δοκιμή", "münchen", "उदाहरण", "ไทย", "مثال")
IDN_TLDS = ("рф", "中国", "भारत", "ไทย", "ελ")


def digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def luhn_digit(body: str) -> str:
    total = sum(sum(divmod(int(d) * 2, 10)) if i % 2 == 0 else int(d) for i, d in enumerate(reversed(body)))
    return str(-total % 10)


def groups(value: str, separator: str, sizes: tuple[int, ...] = ()) -> str:
    """`value` in groups of `sizes` (default fours) joined by `separator`."""
    sizes = sizes or (4,) * (len(value) // 4 + 1)
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    return separator.join(value[a : a + n] for a, n in zip(starts, sizes, strict=True) if value[a : a + n])


def email(rng: random.Random) -> Plant:
    """Internationalised labels as written, then ASCII or punycode ones, then the top-level domain:
    internationalised only right after an internationalised label (the order `_IDN_LABEL` reads)."""
    local = rng.choice(("jane.doe", "li_wei", "A.Nother", "m.mueller7", "x")) + rng.choice(("", "", "+news"))
    written = [rng.choice(IDN_LABELS) for _ in range(rng.choice((0, 0, 1, 2)))]
    tld = rng.choice(("com", "de", "co.uk", "org", "xn--p1ai", "xn--fiqs8s", "idn"))
    if tld == "idn":
        labels = [*written, rng.choice(IDN_LABELS), rng.choice(IDN_TLDS)]
    else:
        words = [rng.choice(IDN_LABELS + ASCII_LABELS) for _ in range(rng.randint(0 if written else 1, 2))]
        labels = [*written, *(word.encode("idna").decode() for word in words), tld]
    return "email", "", f"{local}@{'.'.join(labels)}", ""


PHONES = (
    "+44 20 #### ####",
    "+1 (555) ###-####",
    "(555) ###-####",
    "555-###-####",
    "+86 139 #### ####",
    "030 ########",
    "01 ## ## ## ##",
    "+49 (0)89 #######",
    "139########",
    "+33 6 ## ## ## ##",
)


def phone(rng: random.Random) -> Plant:
    return "phone", "", "".join(rng.choice("0123456789") if c == "#" else c for c in rng.choice(PHONES)), ""


def ipv4(rng: random.Random) -> Plant:
    address = ipaddress.IPv4Address(rng.randrange(1 << 24, 224 << 24))
    return "ipv4", "", str(address), rng.choice(("", "", "/24", ":8080", ": connection refused"))


def ipv6(rng: random.Random) -> Plant:
    network = ipaddress.IPv6Network(rng.choice(("::/0", "2001:db8::/32", "fe80::/64", "::ffff:0:0/96")))
    address = network[rng.randrange(network.num_addresses)]
    form = rng.choice(("compressed", "exploded", "upper", "dotted"))
    written = {
        "compressed": address.compressed,
        "exploded": address.exploded,
        "upper": address.compressed.upper(),
        "dotted": ":".join(address.exploded.split(":")[:6])
        + ":"
        + str(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)),
    }[form]
    if rng.random() < 0.15:
        return "ipv6", "[", written, "]:8080"
    return "ipv6", "", written, rng.choice(("", "", "/64", "%eth0", ": connection refused"))


def card_number(rng: random.Random, scheme: str) -> str:
    ranges = CARD_SCHEMES[scheme].prefixes.split()
    low, _, high = rng.choice(ranges).partition("-")
    prefix = str(rng.randint(int(low), int(high or low)))
    length = rng.choice([n for n in CARD_SCHEMES[scheme].lengths if n >= 13])
    body = prefix + digits(rng, length - len(prefix) - 1)
    return body + luhn_digit(body)


def written_card(rng: random.Random, number: str) -> str:
    separator = rng.choice(("", " ", "-"))
    four_six = len(number) == 15 and number[:2] in ("34", "37") or len(number) == 14  # Amex, Diners
    return groups(number, separator, (4, 6, 5) if four_six else ()) if separator else number


def card(rng: random.Random) -> Plant:
    number = card_number(rng, rng.choice(sorted(CARD_SCHEMES)))
    return "card", "", written_card(rng, number), rng.choice(("", "", " exp 12/27", " EUR"))


def iban_compact(rng: random.Random) -> str:
    country = rng.choice(sorted(IBAN_LENGTHS))
    bban = "".join(
        rng.choice("0123456789" * 3 + "ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(IBAN_LENGTHS[country] - 4)
    )
    numeric = int("".join(str(int(c, 36)) for c in bban + country + "00"))
    return f"{country}{98 - numeric % 97:02d}{bban}"


def iban(rng: random.Random) -> Plant:
    written = groups(iban_compact(rng), rng.choice(("", " ", "-")))
    return "iban", "", written, rng.choice(("", " EUR", " PLN", " A", " BIC"))


def cn_id(rng: random.Random) -> Plant:
    born = f"{rng.randint(1940, 2006)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
    first17 = rng.choice(("110101", "310104", "440305", "510107")) + born + digits(rng, 3)
    check = (12 - sum(int(d) * (2 ** (17 - i) % 11) for i, d in enumerate(first17)) % 11) % 11
    return "cn_id", "", first17 + ("X" if check == 10 else str(check)), ""


def timestamp(rng: random.Random) -> Plant:
    n = rng.choice((10, 13, 16, 19))  # seconds to nanoseconds, 2001 to 2033
    value = str(rng.randrange(10 ** (n - 1), 2 * 10 ** (n - 1)))
    return "timestamp", rng.choice(("created_at=", "ts ")), value, ""


def isbn(rng: random.Random) -> Plant:
    body = rng.choice(("978", "979")) + digits(rng, 9)
    value = body + str(-sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(body)) % 10)
    hyphenated = f"{value[:3]}-{value[3]}-{value[4:8]}-{value[8:12]}-{value[12]}"
    return "isbn", "ISBN ", rng.choice((value, hyphenated)), ""


def order_number(rng: random.Random) -> Plant:
    body = rng.choice("1789") + digits(rng, rng.choice((12, 13, 14, 15, 16, 18)) - 1)
    return "order number", "order #", groups(body + luhn_digit(body), rng.choice(("", " "))), ""


def iban_typo(rng: random.Random) -> Plant:
    compact = iban_compact(rng)
    at = rng.choice([i for i, c in enumerate(compact) if c.isdigit() and i >= 2])
    wrong = compact[:at] + str((int(compact[at]) + rng.randint(1, 9)) % 10) + compact[at + 1 :]
    return "IBAN with a typo", "", groups(wrong, rng.choice(("", " ", "-"))), rng.choice(("", " EUR", " A"))


def card_typo(rng: random.Random) -> Plant:
    number = card_number(rng, rng.choice(sorted(CARD_SCHEMES)))
    wrong = number[:-1] + str((int(number[-1]) + rng.randint(1, 9)) % 10)
    return "card with a typo", "", written_card(rng, wrong), ""


OTHER_LOOK_ALIKES = {
    "date, time": ("2024-05-12 10:30:45", "12.05.2024", "05/12/2024", "at 12:30:45.123"),
    "version": ("v2.0.1.4", "3.11.4", "1.2.3"),
    "MAC address": ("00:1a:2b:3c:4d:5e", "00-1A-2B-3C-4D-5E"),
    "hash": ("d2a84f4b8b650937ec8f73cd8be2c74add5a911b", "16:27:ac:a5:76:28:2d:36:63:1b:56:4d:eb:df:a6:48"),
    "slice, C++": ("a[1::2]", "x[::-1]", "std::vector"),
}


def other(rng: random.Random) -> Plant:
    kind = rng.choice(sorted(OTHER_LOOK_ALIKES))
    return kind, "", rng.choice(OTHER_LOOK_ALIKES[kind]), ""


PII: dict[str, Callable[[random.Random], Plant]] = {
    "email": email,
    "phone": phone,
    "ipv4": ipv4,
    "ipv6": ipv6,
    "card": card,
    "iban": iban,
    "cn_id": cn_id,
}
LOOK_ALIKES: list[Callable[[random.Random], Plant]] = [
    timestamp,
    isbn,
    order_number,
    iban_typo,
    card_typo,
    other,
]


def load_sentences(data: Path) -> list[str]:
    with open(data / DATA_FILE, encoding="utf-8", newline="") as f:
        return [row["text"] for row in csv.DictReader(f, delimiter="\t")]


def places(text: str) -> list[tuple[int, int, bool]]:
    """(start, end, cjk) where a value may go: a space between two words, or between two CJK characters."""
    words = [
        (i, i + 1, False)
        for i in range(1, len(text) - 1)
        if text[i] == " " and text[i - 1].isalnum() and text[i + 1].isalnum()
    ]
    cjk = [(i, i, True) for i in range(1, len(text)) if CJK.match(text[i - 1]) and CJK.match(text[i])]
    return words + cjk


def plant(rng: random.Random) -> Plant:
    """A PII value of any type (70%) or a look-alike."""
    return rng.choice(list(PII.values()))(rng) if rng.random() < 0.7 else rng.choice(LOOK_ALIKES)(rng)


def document(rng: random.Random, sentences: list[str], per_doc: int) -> tuple[str, list[Span], list[Span]]:
    """Three sentences with up to `per_doc` planted values: the text, its PII spans, its look-alike spans."""
    text = " ".join(rng.choice(sentences) for _ in range(3))
    spots = places(text)
    written, pii, look_alikes, done = "", [], [], 0
    for start, end, cjk in sorted(rng.sample(spots, min(per_doc, len(spots)))):
        kind, before, value, after = plant(rng)
        opening, closing = rng.choice(WRAPPERS)
        pad = "" if cjk and value.isascii() else " "  # an internationalised domain is set apart
        written += text[done:start] + pad + opening + before
        (pii if kind in PII else look_alikes).append((len(written), len(written) + len(value), kind))
        written += value + after + closing + pad
        done = end
    return written + text[done:], pii, look_alikes


def score(docs: list[tuple[str, list[Span], list[Span]]]) -> tuple[dict, dict]:
    """Per PII type: planted, replaced whole, replacements; per look-alike kind: planted, intact."""
    pii: dict[str, Counter] = {kind: Counter() for kind in PII_TYPES}
    alike: dict[str, Counter] = {}
    for text, truth, look_alikes in docs:
        found = find_pii(text)
        exact = set(truth) & set(found)
        for _, _, kind in truth:
            pii[kind]["planted"] += 1
        for start, end, kind in found:
            pii[kind]["replacements"] += 1
            pii[kind]["whole"] += (start, end, kind) in exact
        for a, b, kind in look_alikes:
            alike.setdefault(kind, Counter())["planted"] += 1
            alike[kind]["intact"] += not any(start < b and a < end for start, end, _ in found)
    return pii, alike


def render(pii: dict, alike: dict, docs: int, seed: int) -> str:
    def share(part: int, whole: int) -> str:
        return f"{part / whole:.4f}" if whole else "-"

    lines = [
        "# PII anonymisation quality (benchmarks/pii_quality.py)",
        "",
        f"{docs:,} generated documents (Tatoeba sentences of 21 languages, seed {seed}), "
        f"{sum(c['planted'] for c in pii.values()):,} planted PII values and "
        f"{sum(c['planted'] for c in alike.values()):,} look-alikes.",
        "",
        "| type | planted | replaced whole | recall | replacements | precision |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for kind, c in pii.items():
        lines.append(
            f"| {kind} | {c['planted']:,} | {c['whole']:,} | {share(c['whole'], c['planted'])} | "
            f"{c['replacements']:,} | {share(c['whole'], c['replacements'])} |"
        )
    lines += ["", "| look-alike (must stay) | planted | left intact | share |", "|---|---:|---:|---:|"]
    for kind, c in sorted(alike.items()):
        lines.append(f"| {kind} | {c['planted']:,} | {c['intact']:,} | {share(c['intact'], c['planted'])} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=data_dir())
    parser.add_argument("--docs", type=int, default=3000)
    parser.add_argument("--per-doc", type=int, default=3, help="planted values per document")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"seed {args.seed}")
    rng, sentences = random.Random(args.seed), load_sentences(args.data)
    docs = [document(rng, sentences, args.per_doc) for _ in range(args.docs)]
    report = render(*score(docs), args.docs, args.seed)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "pii_quality.md").write_text(report, encoding="utf-8")
    print(report)


if __name__ == "__main__":
    main()
