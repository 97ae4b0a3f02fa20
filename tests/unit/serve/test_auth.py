"""API keys (from a file and the environment, compared in constant time) and the per-key rate limit."""

from __future__ import annotations

import hmac

import pytest

from lmforge.serve.auth import AuthError, KeyRing, RateLimiter, fingerprint, read_keys, retry_after_header


def test_keys_come_from_a_file_and_the_environment(tmp_path, monkeypatch):
    file = tmp_path / "keys.txt"
    file.write_text("# team keys\nalpha-123\n\n  beta-456  \n", encoding="utf-8")
    monkeypatch.setenv("LMFORGE_TEST_KEYS", "gamma, ,delta")
    assert read_keys(file, "LMFORGE_TEST_KEYS") == ["alpha-123", "beta-456", "gamma", "delta"]


@pytest.mark.parametrize(("content", "message"), [
    (None, "no such file"),
    ("# only a comment\n\n", "no API key in it"),
])
def test_a_key_file_without_keys_is_one_line_error(tmp_path, content, message):
    file = tmp_path / "keys.txt"
    if content is not None:
        file.write_text(content, encoding="utf-8")
    with pytest.raises(AuthError, match=message) as err:
        read_keys(file)
    assert str(file) in str(err.value) and "\n" not in str(err.value)


def test_user_and_admin_keys():
    ring = KeyRing(keys=["user-key"], admin_keys=["admin-key"])
    assert ring.enabled
    assert ring.check("user-key") and ring.check("admin-key")
    assert not ring.check("user-key", admin=True) and ring.check("admin-key", admin=True)
    assert not ring.check("user-ke") and not ring.check("user-key ") and not ring.check(None)
    assert not KeyRing().enabled


def test_every_known_key_is_compared_whichever_matches(monkeypatch):
    """No early exit: the time taken must not tell which key (or how many) matched."""
    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: calls.append(1) or real(a, b))
    ring = KeyRing(keys=["first", "second", "third"])
    for presented in ("first", "third", "nope"):
        calls.clear()
        ring.check(presented)
        assert len(calls) == 3


def test_fingerprint_is_short_and_not_the_key():
    assert len(fingerprint("secret-key")) == 8 and "secret" not in fingerprint("secret-key")
    assert fingerprint("a") != fingerprint("b")


def test_token_bucket_allows_a_burst_then_refills_at_the_rate():
    now = [100.0]
    limiter = RateLimiter(rate=2.0, burst=3, clock=lambda: now[0])
    assert [limiter.acquire("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("k") == pytest.approx(0.5)  # one token back after 1/rate s
    assert limiter.acquire("other") == 0.0  # buckets are per key
    now[0] += 0.5
    assert limiter.acquire("k") == 0.0
    assert limiter.acquire("k") == pytest.approx(0.5)
    now[0] += 60
    assert [limiter.acquire("k") for _ in range(4)][:3] == [0.0, 0.0, 0.0]  # never more than the burst


def test_retry_after_is_whole_seconds_at_least_one():
    assert [retry_after_header(s) for s in (0.01, 1.0, 1.2)] == ["1", "1", "2"]
