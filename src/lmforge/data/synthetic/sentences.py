"""Sentences with labelled character spans, the random values that fill their slots, and edits.

A template is rendered left to right, so every entity and PII value is recorded at the exact
character offsets where it lands; the ground truth never has to be recovered by searching.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

from lmforge.data.synthetic.lexicon import Lexicon, Topic
from lmforge.data.text import word_spans

SLOT = re.compile(r"\{(\w+)\}")

ENTITY_SLOTS = {"P": "PER", "G": "ORG", "L": "LOC"}
PII_SLOTS = {"P": "person", "E": "email", "PH": "phone", "IP": "ipv4", "IP6": "ipv6", "CARD": "card"}
DOMAINS = ("example.com", "example.org", "mail.example.net", "example.de", "example.fr", "example.es",
           "example.cn")
Spans = list[tuple[int, int, str]]
"""(start, end, slot) in characters, for the slots in ENTITY_SLOTS or PII_SLOTS."""


@dataclass
class Sentence:
    text: str
    spans: Spans = field(default_factory=list)


def luhn_check_digit(digits: str) -> str:
    """The digit that makes `digits + check` pass the Luhn test, as real card numbers do."""
    total = 0
    for i, char in enumerate(reversed(digits)):
        value = int(char) * (2 if i % 2 == 0 else 1)
        total += value - 9 if value > 9 else value
    return str(-total % 10)


class Filler:
    """Slot values for one document: a small cast of people, places and organisations recurs,
    as in real articles, so the text is coherent enough for a small LM to pick up."""

    def __init__(self, rng: random.Random, lex: Lexicon, topic: Topic) -> None:
        self.rng, self.lex, self.topic = rng, lex, topic
        self.people = [self._person() for _ in range(3)]
        self.places = rng.sample(lex.places, 2)
        self.orgs = rng.sample(lex.orgs, 2)

    def __call__(self, slot: str) -> str:
        rng, lex, topic = self.rng, self.lex, self.topic
        values = {
            "S": lambda: rng.choice(topic.subjects),
            "V": lambda: rng.choice(topic.verbs),
            "O": lambda: rng.choice(topic.objects),
            "M": lambda: rng.choice(topic.measures).format(N=self._number()),
            "T": lambda: rng.choice(lex.times),
            "D": self._date,
            "Y": lambda: str(self._year()),
            "L": lambda: self._pick(self.places, lex.places),
            "G": lambda: self._pick(self.orgs, lex.orgs),
            "P": lambda: self._cast_person()[0],
            "E": self._email,
            "PH": self._phone,
            "IP": self._ipv4,
            "IP6": self._ipv6,
            "CARD": self._card,
        }
        return values[slot]()

    def render(self, template: str) -> Sentence:
        """Fill `template`, recording where each tagged value lands; capitalise the first letter."""
        text, spans = "", []
        for i, piece in enumerate(SLOT.split(template)):
            if i % 2 == 0:
                text += piece
                continue
            value = self(piece)
            if piece in ENTITY_SLOTS or piece in PII_SLOTS:
                spans.append((len(text), len(text) + len(value), piece))
            text += value
        if len(text[:1].upper()) == 1:
            text = text[:1].upper() + text[1:]
        return Sentence(text, spans)

    def _pick(self, cast: list[str], pool: list[str]) -> str:
        return self.rng.choice(cast) if self.rng.random() < 0.8 else self.rng.choice(pool)

    def _cast_person(self) -> tuple[str, str]:
        return self.rng.choice(self.people) if self.rng.random() < 0.8 else self._person()

    def _person(self) -> tuple[str, str]:
        """(name as written, e-mail local part)."""
        (first, first_latin), (last, last_latin) = (self.rng.choice(self.lex.first_names),
                                                    self.rng.choice(self.lex.last_names))
        written = f"{last}{first}" if self.lex.joiner == "" else f"{first} {last}"
        local = self.rng.choice((f"{first_latin}.{last_latin}", f"{first_latin[0]}{last_latin}",
                                 f"{last_latin}.{first_latin}{self.rng.randint(1, 99)}"))
        return written, local

    def _number(self) -> int:
        return self.rng.randint(2, 99) if self.rng.random() < 0.7 else self.rng.randint(100, 5000)

    def _year(self) -> int:
        return self.rng.randint(1998, 2024)

    def _date(self) -> str:
        month = self.rng.randint(1, 12)
        name = self.lex.months[month - 1] if self.lex.months else ""
        return self.lex.date.format(d=self.rng.randint(1, 28), m=month, month=name, y=self._year())

    def _email(self) -> str:
        return f"{self._cast_person()[1]}@{self.rng.choice(DOMAINS)}"

    def _phone(self) -> str:
        fmt = self.rng.choice(self.lex.phones)
        return "".join(str(self.rng.randrange(10)) if c == "#" else c for c in fmt)

    def _ipv4(self) -> str:
        rng = self.rng
        return f"{rng.randint(1, 223)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randint(1, 254)}"

    def _ipv6(self) -> str:
        groups = [f"{self.rng.randrange(1, 65536):x}" for _ in range(6)]
        if self.rng.random() < 0.5:
            return "2001:db8::" + ":".join(groups[:2])
        return "2001:db8:" + ":".join(groups)

    def _card(self) -> str:
        body = self.rng.choice(("4", "51", "52", "53", "54", "55"))
        body += "".join(str(self.rng.randrange(10)) for _ in range(15 - len(body)))
        number = body + luhn_check_digit(body)
        sep = self.rng.choice((" ", "-", ""))
        return sep.join(number[i:i + 4] for i in range(0, 16, 4))


def edit(sentence: Sentence, rng: random.Random, lex: Lexicon) -> Sentence:
    """One random word edit (replace, delete or insert) outside every span: the unit of change
    that turns a copy into a near duplicate. Words are those of `lmforge.data.text`, the ones
    near-dedup shingles (one character each in Chinese). Later spans shift with the text."""
    text, spans = sentence.text, sentence.spans
    free = [(a, b) for a, b in word_spans(text) if all(b <= start or a >= end for start, end, _ in spans)]
    if not free:
        return sentence
    start, end = rng.choice(free)
    verbs = [v for topic in lex.topics.values() for v in topic.verbs]
    word = rng.choice(list("".join(verbs)) if lex.joiner == "" else " ".join(verbs).split())
    op = rng.choice(("replace", "delete", "insert"))
    if op == "replace":
        new, pivot = text[:start] + word + text[end:], end
    elif op == "delete":
        if lex.joiner and text.startswith(lex.joiner, end):
            end += len(lex.joiner)  # the word goes with the space after it
        elif lex.joiner and text.endswith(lex.joiner, 0, start):
            start -= len(lex.joiner)  # or, before a comma or full stop, with the space before it
        new, pivot = text[:start] + text[end:], end
    else:
        new, pivot = text[:start] + word + lex.joiner + text[start:], start
    shift = len(new) - len(text)
    return Sentence(new, [(a + shift, b + shift, s) if a >= pivot else (a, b, s) for a, b, s in spans])
