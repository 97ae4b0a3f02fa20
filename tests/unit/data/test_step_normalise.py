from __future__ import annotations

import random
from collections import Counter

import pytest
from pydantic import ValidationError

from lmforge.data.curate.base import Drop
from lmforge.data.curate.steps.normalise import Normalise, NormaliseSettings, normalise_text


def _doc(text: str) -> dict:
    return {"id": "d", "text": text, "source": "test", "metadata": {}}


@pytest.mark.parametrize(("raw", "clean"), [
    ("cafe\u0301", "caf\u00e9"),                                   # decomposed accent -> NFC
    ("a  \t b \r\nc\r\rd\n\n\n\ne  ", "a b\nc\n\nd\n\ne"),          # line breaks, runs, blank lines
    ("he\u200bllo\x00 wo\ufeffrld\x1b\x85next", "hello world\nnext"),  # controls, zero-width, NEL
    ("  \n\nkeep\tone tab\n    indented  code  ", "keep\tone tab\n    indented code"),
    ("\u00a0\u00a0x", "x"),
])
def test_normalise_text(raw, clean):
    assert normalise_text(raw) == clean


def test_nfkc_folds_compatibility_forms_only_when_asked():
    assert normalise_text("\ufb01le \uff21") == "\ufb01le \uff21"
    assert normalise_text("\ufb01le \uff21", "NFKC") == "file A"


def test_joiners_that_carry_meaning_survive():
    emoji = "\U0001f469\u200d\U0001f4bb"
    assert normalise_text(emoji) == emoji


def test_normalising_is_idempotent():
    rng = random.Random(0)
    alphabet = "ab é\u0301\t\n\r\u200b\x00\x85\u2028\u00a0\ufeff."
    for _ in range(300):
        once = normalise_text("".join(rng.choices(alphabet, k=40)))
        assert normalise_text(once) == once


def test_step_counts_changes_and_never_mutates_its_input():
    step, counters = Normalise(NormaliseSettings()), Counter()
    clean = _doc("Already clean.")
    assert step.apply(clean, counters)[0] is clean
    dirty = _doc("Two  spaces.\r\n")
    [out] = step.apply(dirty, counters)
    assert out["text"] == "Two spaces." and dirty["text"] == "Two  spaces.\r\n"
    assert counters == Counter(changed=1)


def test_empty_after_normalise_is_dropped():
    assert Normalise(NormaliseSettings()).apply(_doc("\u200b \n\t\r\n\x00"), Counter()) == \
        Drop("empty_after_normalise")


def test_settings_reject_unknown_forms():
    assert NormaliseSettings().form == "NFC"
    with pytest.raises(ValidationError):
        NormaliseSettings(form="NFD")
