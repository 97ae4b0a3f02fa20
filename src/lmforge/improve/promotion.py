"""Promoting an A/B test's winner on a running server: its admin API hot-swaps the winner in under
the control's name and ends the test. Promotion only ever happens over HTTP, so the server that
is answering users is the one that changes."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from lmforge.improve.abtest import AbTestError


def winner(analysis: Path) -> str:
    """The variant an `abtest analyze` analysis.json decided to promote; refused for any other decision."""
    try:
        decision = str(json.loads(analysis.read_text(encoding="utf-8"))["decision"])
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        raise AbTestError(f"{analysis}: not an analysis.json of `lmforge abtest analyze --out` "
                          f"({type(err).__name__}: {err})") from None
    if not decision.startswith("promote "):
        raise AbTestError(f"{analysis}: the decision is {decision!r}, not to promote; nothing changed")
    return decision.removeprefix("promote ").strip()


def promote(url: str, experiment: str, variant: str, admin_key: str | None) -> dict:
    """POST the promotion; returns what the server now serves ({"name", "version"})."""
    headers = {"Authorization": f"Bearer {admin_key}"} if admin_key else {}
    try:
        response = httpx.post(f"{url.rstrip('/')}/admin/experiments/{experiment}/promote",
                              json={"variant": variant}, headers=headers, timeout=600)
    except httpx.HTTPError as err:
        raise AbTestError(f"{url}: cannot reach the server ({err})") from None
    if response.status_code != 200:
        raise AbTestError(f"{url}: HTTP {response.status_code}: {response.text[:300]}")
    return response.json()["serves"]
