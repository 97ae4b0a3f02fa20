"""Bearer API keys and a per-key rate limit.

Keys come from a file (one per line, `#` comments) or an environment variable (comma-separated);
admin keys, which may also load model versions, are a separate set. A presented key is compared
with every known key through `hmac.compare_digest` on their SHA-256 digests, so the time taken
depends neither on where the first differing byte is nor on which key matched. Keys are never
logged: logs name a key by its short fingerprint at most, and metrics not at all.

The rate limit is a token bucket per key (`rate` requests per second, bursts up to `burst`); a
request over it gets 429 with Retry-After saying when a token will be back.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge.errors import READ_ERRORS, LmforgeError, unreadable


class AuthError(LmforgeError):
    """A key file that cannot be read or holds no key."""


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def read_keys(file: str | Path | None = None, env: str | None = None) -> list[str]:
    """Keys from `file` (one per line; blank lines and `#` comments skipped) and from the
    comma-separated environment variable `env`."""
    keys: list[str] = []
    if file is not None:
        try:
            lines = Path(file).read_text(encoding="utf-8").splitlines()
        except READ_ERRORS as err:
            raise AuthError(unreadable(file, err, "an API key file, one key per line")) from None
        keys += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        if not keys:
            raise AuthError(f"{file}: no API key in it (expected one key per line)")
    if env is not None:
        keys += [key.strip() for key in os.environ.get(env, "").split(",") if key.strip()]
    return keys


@dataclass
class KeyRing:
    """Known keys as digests; `check` says whether a presented key is one of them."""

    keys: list[str] = field(default_factory=list)
    admin_keys: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._user = [_digest(k) for k in self.keys + self.admin_keys]
        self._admin = [_digest(k) for k in self.admin_keys]

    @property
    def enabled(self) -> bool:
        """No keys configured means an open server (for local use; `lmforge serve` says so)."""
        return bool(self._user)

    def check(self, presented: str | None, admin: bool = False) -> bool:
        if presented is None:
            return False
        digest = _digest(presented)
        matches = [hmac.compare_digest(digest, known) for known in (self._admin if admin else self._user)]
        return any(matches)  # every comparison is made before deciding


def bearer(request: Any) -> str | None:
    """The key of an `Authorization: Bearer <key>` header, or None."""
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" and credentials.strip() else None


def fingerprint(key: str) -> str:
    """A short, non-reversible name for a key (rate-limit buckets, logs)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:8]


@dataclass
class RateLimiter:
    """Token buckets by key fingerprint: `rate` tokens per second, at most `burst` saved up."""

    rate: float
    burst: int
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)
    """fingerprint -> (tokens, time of the last update)."""

    def acquire(self, who: str) -> float:
        """Take one token for `who`; returns 0 when allowed, else the seconds until one is back."""
        now = self.clock()
        tokens, last = self._buckets.get(who, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if tokens >= 1:
            self._buckets[who] = (tokens - 1, now)
            return 0.0
        self._buckets[who] = (tokens, now)
        return (1 - tokens) / self.rate


def retry_after_header(seconds: float) -> str:
    """Retry-After in whole seconds, rounded up and at least 1 (RFC 9110 takes integers)."""
    return str(max(1, math.ceil(seconds)))
