"""The result cache: keys are the exact identity of a computation, the in-process LRU is bounded by
bytes and expires entries, and Redis (a real `redis-server`, killed and restarted) never fails a
request and is not asked again before `retry_seconds` after a failure."""

from __future__ import annotations

import itertools
import json
import logging
import os
import signal

import pytest

from lmforge.serve.result_cache import (
    InProcessCache,
    RedisCache,
    ResultCacheError,
    cache_key,
    is_cacheable,
    open_cache,
)

PARAMS = {"temperature": 0, "top_p": 1.0, "top_k": 0, "max_tokens": 32, "stop": ["\n"], "seed": None}
BASE = {"model": "tiny-lm", "model_version": "3", "tokenizer_digest": "sha256:ab12", "route": "generate",
        "inputs": "Le café est noir.", "params": PARAMS}
_names = itertools.count()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def key(**changes) -> str:
    return cache_key(**{**BASE, **changes})


def unique_key() -> str:
    """A key no other test of the session uses (the Redis server is shared)."""
    return key(inputs=f"request {next(_names)}")


# --- keys ---------------------------------------------------------------------------------------

def test_key_names_model_and_version_in_its_prefix():
    prefix, digest = key().rsplit(":", 1)
    assert prefix == "lmforge:tiny-lm:3"
    assert len(digest) == 64 and int(digest, 16) >= 0
    # a ':' inside a model or version name cannot make two identities share a key
    assert key(model="a:b", model_version="c") != key(model="a", model_version="b:c")


def test_the_same_request_written_in_another_order_has_the_same_key():
    params = dict(reversed(list(PARAMS.items())))
    chat = [{"role": "user", "content": "Bonjour"}]
    reordered_chat = [{"content": "Bonjour", "role": "user"}]
    assert key(params=params) == key()
    assert key(inputs=chat) == key(inputs=reordered_chat)
    # JSON clients write a zero temperature as 0 or 0.0
    assert key(params={**PARAMS, "temperature": 0.0, "max_tokens": 32.0}) == key()


@pytest.mark.parametrize("name, value", [
    ("temperature", 0.7), ("top_p", 0.9), ("top_k", 40), ("max_tokens", 33), ("stop", ["."]),
    ("seed", 7), ("repetition_penalty", 1.1),  # one the key has never heard of
])
def test_every_decoding_parameter_changes_the_key(name, value):
    assert key(params={**PARAMS, name: value}) != key()


@pytest.mark.parametrize("change", [
    {"route": "chat"}, {"tokenizer_digest": "sha256:cd34"}, {"model_version": "4"}, {"model": "other-lm"},
    {"inputs": "le café est noir."},  # case: a cased model sees other tokens
    {"inputs": "Le  café est noir."},  # inner whitespace
    {"inputs": "Le café est noir"},
])
def test_every_other_part_of_the_identity_changes_the_key(change):
    assert key(**change) != key()


def test_inputs_that_differ_only_in_nfc_or_surrounding_whitespace_have_the_same_key():
    composed, decomposed = "Le caf\u00e9 est noir.", "Le cafe\u0301 est noir."
    assert composed != decomposed
    assert key(inputs=decomposed) == key(inputs=composed)
    assert key(inputs=f" \t{composed}\n") == key(inputs=composed)
    assert (key(inputs=[{"role": "user", "content": f"{decomposed}\n"}])
            == key(inputs=[{"role": "user", "content": composed}]))
    # NFKC would fold the ligature into "fi": another text to the model, so another key
    assert key(inputs="\ufb01n") != key(inputs="fin")


@pytest.mark.parametrize("params, single_pass, cacheable", [
    ({"temperature": 0}, False, True),
    ({"temperature": 0.0, "top_p": 0.5}, False, True),
    ({"temperature": 0.8, "seed": 3}, False, True),
    ({"temperature": 0.8}, False, False),
    ({"temperature": 0.8, "seed": None}, False, False),
    ({}, False, False),  # no temperature: sampling at the default of 1
    ({"temperature": 1.0}, True, True),  # classify / NER / embeddings: one forward pass, no sampling
])
def test_only_deterministic_requests_are_cacheable(params, single_pass, cacheable):
    assert is_cacheable(params, single_pass=single_pass) is cacheable


# --- in-process ----------------------------------------------------------------------------------

def value_of(size: int, key_name: str) -> dict:
    """A value whose entry (key + JSON bytes) is exactly `size` bytes."""
    return {"text": "x" * (size - len(key_name) - len('{"text":""}'))}


def test_in_process_cache_evicts_least_recently_used_entries_by_bytes():
    outcomes = []
    cache = InProcessCache(max_bytes=300, ttl_seconds=60, clock=FakeClock(), on_lookup=outcomes.append)
    for name in ("k1", "k2", "k3"):
        cache.set(name, value_of(100, name))
    assert cache.size_bytes == 300
    assert cache.get("k1") == value_of(100, "k1")  # k1 is now the most recently used
    cache.set("k4", value_of(100, "k4"))  # over by 100: the least recently used (k2) goes
    assert cache.get("k2") is None
    cache.set("big", value_of(200, "big"))  # one entry, but 200 bytes: k3, then k1 go
    assert [name for name in ("k1", "k3", "k4", "big") if cache.get(name) is not None] == ["k4", "big"]
    assert cache.size_bytes == 300
    cache.set("huge", value_of(301, "huge"))  # larger than the whole cache: not stored, evicts nothing
    assert cache.get("huge") is None and cache.get("k4") is not None and cache.get("big") is not None
    assert outcomes == ["hit", "miss", "miss", "miss", "hit", "hit", "miss", "hit", "hit"]


def test_in_process_entries_expire_after_the_ttl():
    clock = FakeClock()
    cache = InProcessCache(max_bytes=10_000, ttl_seconds=10, clock=clock)
    cache.set("a", {"label": "POS"})
    clock.advance(9.99)
    assert cache.get("a") == {"label": "POS"}  # a hit does not extend the TTL
    clock.advance(0.01)
    assert cache.get("a") is None
    assert cache.size_bytes == 0


def test_in_process_entries_do_not_change_with_the_callers_dicts():
    cache = InProcessCache(max_bytes=10_000, ttl_seconds=10)
    stored = {"labels": ["PER"]}
    cache.set("a", stored)
    stored["labels"].append("LOC")
    cache.get("a")["labels"].append("ORG")
    assert cache.get("a") == {"labels": ["PER"]}


def test_open_cache_picks_redis_for_a_url_and_rejects_a_malformed_one(redis_server):
    assert isinstance(open_cache(None, ttl_seconds=60, max_bytes=1000), InProcessCache)
    assert open_cache(None, ttl_seconds=60, max_bytes=0) is None  # settings: 0 turns caching off
    assert isinstance(open_cache(redis_server.url, ttl_seconds=60, max_bytes=0), RedisCache)
    with pytest.raises(ResultCacheError, match="redis://host:port/db"):
        open_cache("http://127.0.0.1:6379", ttl_seconds=60, max_bytes=1000)


# --- Redis ---------------------------------------------------------------------------------------

def test_redis_round_trip_stores_json_with_the_ttl(redis_server):
    outcomes = []
    cache = RedisCache(redis_server.url, ttl_seconds=599.5, on_lookup=outcomes.append)  # EX rounds up
    name, value = unique_key(), {"text": "noir et fort ☕", "tokens": 5, "finish_reason": "stop"}
    assert cache.get(name) is None
    cache.set(name, value)
    assert cache.get(name) == value
    assert outcomes == ["miss", "hit"]
    client = redis_server.client()
    assert json.loads(client.get(name)) == value
    assert 599 <= client.ttl(name) <= 600


def test_two_replicas_share_entries(redis_server):
    first, second = RedisCache(redis_server.url, 60), RedisCache(redis_server.url, 60)
    name = unique_key()
    first.set(name, {"label": "NEG"})
    assert second.get(name) == {"label": "NEG"}


def test_a_dead_redis_is_a_miss_and_is_not_asked_again_before_retry_seconds(redis_server, caplog):
    caplog.set_level(logging.WARNING, logger="lmforge.serve.result_cache")
    clock, outcomes = FakeClock(), []
    cache = RedisCache(redis_server.url, 60, retry_seconds=5, clock=clock, on_lookup=outcomes.append)
    name, value = unique_key(), {"text": "réponse"}
    cache.set(name, value)
    assert cache.get(name) == value
    with redis_server.down():
        assert cache.get(name) is None  # asks, fails: down until +5 s
        cache.set(unique_key(), value)  # silently dropped
        clock.advance(5)
        assert cache.get(name) is None  # asks again, fails again: down until +10 s
    # Redis is back (empty) and holds the entry again, but the cache must not ask before +10 s
    redis_server.client().set(name, json.dumps(value))
    clock.advance(4.9)
    assert cache.get(name) is None
    stored_while_down = unique_key()
    cache.set(stored_while_down, value)
    assert redis_server.client().exists(stored_while_down) == 0
    clock.advance(0.1)
    assert cache.get(name) == value
    cache.set(stored_while_down, value)
    assert redis_server.client().exists(stored_while_down) == 1
    assert outcomes == ["hit", "error", "error", "error", "hit"]
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2 and "failed" in messages[0] and "back" in messages[1]
    assert all(f"127.0.0.1:{redis_server.port}" in m for m in messages)
    assert not any(name in m or "réponse" in m for m in messages)


def test_a_redis_restart_between_two_requests_costs_no_outage(redis_server):
    outcomes = []
    cache = RedisCache(redis_server.url, 60, clock=FakeClock(), on_lookup=outcomes.append)
    name = unique_key()
    cache.set(name, {"label": "POS"})  # leaves a pooled connection the restart will cut
    redis_server.stop()
    redis_server.start()
    assert cache.get(name) is None  # a plain miss (the restart emptied Redis), not an error
    cache.set(name, {"label": "POS"})
    assert cache.get(name) == {"label": "POS"}
    assert outcomes == ["miss", "hit"]


def test_a_stalled_redis_costs_one_timeout_then_is_not_asked(redis_server):
    outcomes = []
    cache = RedisCache(redis_server.url, 60, clock=FakeClock(), socket_timeout=0.1, on_lookup=outcomes.append)
    name = unique_key()
    cache.set(name, {"label": "POS"})
    connections = redis_server.client().info("stats")["total_connections_received"]
    os.kill(redis_server.process.pid, signal.SIGSTOP)
    try:
        assert cache.get(name) is None  # times out on its pooled connection
    finally:
        os.kill(redis_server.process.pid, signal.SIGCONT)
    assert cache.get(name) is None  # Redis answers again, but the timeout marked it down
    assert outcomes == ["error", "error"]
    # the stopped Redis's kernel still accepted connections, so each retry would have added one;
    # this fresh client's own connection is accepted after them and is the only new one
    assert redis_server.client().info("stats")["total_connections_received"] == connections + 1


def test_a_value_redis_holds_that_is_not_json_is_an_error_not_an_outage(redis_server):
    outcomes = []
    cache = RedisCache(redis_server.url, 60, clock=FakeClock(), on_lookup=outcomes.append)
    foreign, name = unique_key(), unique_key()
    redis_server.client().set(foreign, b"\x80 not json")
    cache.set(name, {"label": "POS"})
    assert cache.get(foreign) is None
    assert cache.get(name) == {"label": "POS"}
    assert outcomes == ["error", "hit"]
