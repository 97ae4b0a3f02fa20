"""The result cache: whole responses of deterministic requests, in Redis when a URL is given, else in
this process.

A cached answer is only right if its key is the exact identity of the computation, so `cache_key`
hashes everything that changes the output (model, model version, tokenizer, route, normalised
input, every decoding parameter) and puts the model version in the readable prefix: a deploy
invalidates by construction (no SCAN/DEL), and replicas of one version behind a balancer share
entries safely. Only deterministic requests are cacheable (`is_cacheable`), and the caller stores
only successful answers (one cut at `max_tokens` is the exact answer to its request: max_tokens is
in the key).

Either cache is best effort: entries expire after a TTL, the in-process one is bounded by bytes
(a bound by entry count, as GPTCache's, runs out of memory when answers are large), and a Redis
that is down or failing turns into misses, never into a failed request, as Triton's response cache
does. Run Redis with `maxmemory` and `maxmemory-policy allkeys-lfu`: under `noeviction` a full
Redis refuses every SET, which this module treats as Redis being down.

Each `get` reports its outcome, hit / miss / error, to an `on_lookup` callback, so the server counts
`lmforge_cache_requests_total{cache="result", result=...}` without this module knowing metrics.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Literal, Protocol

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from lmforge.errors import LmforgeError

logger = logging.getLogger(__name__)

Outcome = Literal["hit", "miss", "error"]
"""`error`: the cache could not be read (Redis down or failing) and the request runs without it."""
KEY_PREFIX = "lmforge"
SOCKET_TIMEOUT_SECONDS = 0.25
"""Connect and read timeout of Redis calls: a healthy Redis answers in about a millisecond, and a
stalled one must not add more than this to a request before the cache is marked down."""
REDIS_ERRORS = (redis.RedisError, OSError)
"""Everything a Redis call can raise: redis-py's own errors (its ConnectionError and TimeoutError
included) and the socket errors (OSError) it lets through."""


class ResultCacheError(LmforgeError):
    """A result cache setting the user can fix (a malformed Redis URL, a TTL or size that is not positive)."""


class ResultCache(Protocol):
    """What the server uses; each `get` also calls the cache's `on_lookup` with its outcome."""

    def get(self, key: str) -> dict | None: ...

    def set(self, key: str, value: dict) -> None: ...


def normalise_input(inputs: Any) -> Any:
    """`inputs` with every string (at any depth of lists and dict values) in Unicode NFC and
    stripped of surrounding whitespace; dict keys, numbers and the structure are kept.

    Normalised, because they are the same request written differently: canonically equivalent code
    points ("é" as one code point or as "e" + a combining accent, which keyboards and operating
    systems produce alike) and whitespace around the text that copy-paste and form fields add.
    Not normalised, because the model sees them differently: case, whitespace inside the text
    (runs, tabs, newlines matter in code and verse), NFKC compatibility folding ("ﬁ", "²" and
    full-width forms would become other characters), quotes and punctuation.

    The tokenizer has no normaliser (byte-level BPE), so the key is exact only if the server also
    runs the model on `normalise_input(inputs)`: otherwise two byte-different inputs would share
    the answer computed for one of them.
    """
    if isinstance(inputs, str):
        return unicodedata.normalize("NFC", inputs).strip()
    if isinstance(inputs, (list, tuple)):
        return [normalise_input(item) for item in inputs]
    if isinstance(inputs, dict):
        return {key: normalise_input(value) for key, value in inputs.items()}
    return inputs


def _same_numbers(value: Any) -> Any:
    """Integral floats as ints, at any depth: `"temperature": 0.0` and `0` are one request, but JSON
    writes them differently. Bools stay bools."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, (list, tuple)):
        return [_same_numbers(item) for item in value]
    if isinstance(value, dict):
        return {key: _same_numbers(item) for key, item in value.items()}
    return value


def cache_key(model: str, model_version: str, tokenizer_digest: str, route: str, inputs: Any,
              params: dict) -> str:
    """`lmforge:<model>:<model_version>:<sha256 hex>` over a canonical JSON (sorted keys) of all the
    arguments, inputs normalised by `normalise_input`.

    `params` goes in whole, so no decoding parameter (temperature, top_p, top_k, max_tokens, stop,
    seed, or one added later) can be silently left out; pass the effective values, server defaults
    filled in, so that changing a default changes the key. Model and version are hashed too, so that
    a `:` in either cannot make two prefixes alike.
    """
    identity = {"model": model, "model_version": model_version, "tokenizer": tokenizer_digest,
                "route": route, "inputs": normalise_input(inputs), "params": params}
    canonical = json.dumps(_same_numbers(identity), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return f"{KEY_PREFIX}:{model}:{model_version}:{hashlib.sha256(canonical.encode()).hexdigest()}"


def is_cacheable(params: dict, *, single_pass: bool = False) -> bool:
    """Whether a request always gives the same answer: greedy decoding (temperature 0) or a fixed
    seed. A missing temperature counts as sampling (OpenAI's default is 1).

    `single_pass=True` is the caller saying the route runs one forward pass with no sampling
    (classify, NER, embeddings: the routes it sends through the dynamic batcher), which is
    deterministic whatever `params` holds.
    """
    return single_pass or params.get("temperature") == 0 or params.get("seed") is not None


def _encode(value: dict) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _ignore(outcome: Outcome) -> None:
    """The default `on_lookup`: nothing counts."""


class InProcessCache:
    """LRU over key + encoded value bytes, each entry expiring `ttl_seconds` after it was set
    (Python's per-entry overhead, about 200 bytes, comes on top of `max_bytes`).

    Values are kept as their JSON bytes, as in Redis: the size bound is exact, a value that works
    here also works there, and a caller mutating a dict it stored or got never changes the entry.
    A value larger than `max_bytes` is not stored (it would evict everything else). Thread-safe.
    """

    def __init__(self, max_bytes: int, ttl_seconds: float, clock: Callable[[], float] = time.monotonic,
                 on_lookup: Callable[[Outcome], None] = _ignore):
        if max_bytes <= 0 or ttl_seconds <= 0:
            raise ResultCacheError(f"result cache: max_bytes ({max_bytes}) and ttl_seconds ({ttl_seconds}) "
                                   "must be positive")
        self.max_bytes = max_bytes
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        self._on_lookup = on_lookup
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def size_bytes(self) -> int:
        """Key + value bytes held now."""
        return self._bytes

    def get(self, key: str) -> dict | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and self._clock() >= entry[0]:
                self._drop(key)
                entry = None
            if entry is not None:
                self._entries.move_to_end(key)
        self._on_lookup("miss" if entry is None else "hit")
        return None if entry is None else json.loads(entry[1])

    def set(self, key: str, value: dict) -> None:
        data = _encode(value)
        size = len(key.encode()) + len(data)
        if size > self.max_bytes:
            return
        with self._lock:
            if key in self._entries:
                self._drop(key)
            self._entries[key] = (self._clock() + self.ttl_seconds, data)
            self._bytes += size
            while self._bytes > self.max_bytes:
                self._drop(next(iter(self._entries)))

    def _drop(self, key: str) -> None:
        _, data = self._entries.pop(key)
        self._bytes -= len(key.encode()) + len(data)


_DOWN = object()
"""What `RedisCache._call` returns when Redis was not (or could not be) asked."""


class RedisCache:
    """Entries as JSON bytes under `SET key value EX ttl_seconds` (rounded up to whole seconds),
    shared by every replica on `url`.

    Any error marks Redis down: `get` is a miss (outcome `error`) and `set` does nothing, without
    asking Redis, until `retry_seconds` have passed on `clock`; then one call tries again, and the
    cache is back as soon as one succeeds. A dead Redis thus costs one timeout per `retry_seconds`,
    not one per request. One warning is logged when it goes down and one when it comes back, naming
    the Redis host, never a key or request text.

    redis-py's own retries are off, explicitly (`redis.Redis()` defaults to three more tries with
    backoff, timeouts included): they would multiply what a dead or stalled Redis costs a request,
    and a pooled connection that a restarted Redis closed needs none (the pool replaces it before
    handing it out).
    """

    def __init__(self, url: str, ttl_seconds: float, retry_seconds: float = 5.0,
                 clock: Callable[[], float] = time.monotonic, socket_timeout: float = SOCKET_TIMEOUT_SECONDS,
                 on_lookup: Callable[[Outcome], None] = _ignore):
        if ttl_seconds <= 0:
            raise ResultCacheError(f"result cache: ttl_seconds must be positive, got {ttl_seconds}")
        try:
            self._client = redis.Redis.from_url(url, socket_timeout=socket_timeout,
                                                socket_connect_timeout=socket_timeout,
                                                retry=Retry(NoBackoff(), 0))
        except ValueError as err:
            raise ResultCacheError(f"result cache URL: {err} (expected redis://host:port/db)") from None
        self.ttl_seconds = math.ceil(ttl_seconds)
        self.retry_seconds = retry_seconds
        self._clock = clock
        self._on_lookup = on_lookup
        self._retry_at: float | None = None
        """When Redis may be tried again; None while it is up."""
        self._lock = threading.Lock()

    def get(self, key: str) -> dict | None:
        data = self._call(self._client.get, key)
        if data is _DOWN:
            self._on_lookup("error")
            return None
        if data is None:
            self._on_lookup("miss")
            return None
        try:
            value = json.loads(data)
        except ValueError:  # not written by this module: unusable, but Redis itself is fine
            self._on_lookup("error")
            return None
        self._on_lookup("hit")
        return value

    def set(self, key: str, value: dict) -> None:
        self._call(self._client.set, key, _encode(value), ex=self.ttl_seconds)

    def _call(self, command: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """`command(*args, **kwargs)`, or `_DOWN` if Redis is marked down or fails now."""
        with self._lock:
            if self._retry_at is not None:
                now = self._clock()
                if now < self._retry_at:
                    return _DOWN
                self._retry_at = now + self.retry_seconds  # this call tries; concurrent ones keep skipping
        try:
            result = command(*args, **kwargs)
        except REDIS_ERRORS as err:
            self._went_down(err)
            return _DOWN
        if self._retry_at is not None:
            self._came_back()
        return result

    def _where(self) -> str:
        """The Redis host:port (or socket path) for logs; the URL could hold a password."""
        kwargs = self._client.connection_pool.connection_kwargs
        return kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}"

    def _went_down(self, err: BaseException) -> None:
        with self._lock:
            if self._retry_at is None:
                logger.warning("result cache: Redis at %s failed (%s: %s); serving without the cache, "
                               "retrying every %gs", self._where(), type(err).__name__, err,
                               self.retry_seconds)
            self._retry_at = self._clock() + self.retry_seconds

    def _came_back(self) -> None:
        with self._lock:
            if self._retry_at is not None:
                logger.warning("result cache: Redis at %s is back; caching again", self._where())
            self._retry_at = None


def open_cache(redis_url: str | None, *, ttl_seconds: float, max_bytes: int, retry_seconds: float = 5.0,
               clock: Callable[[], float] = time.monotonic,
               on_lookup: Callable[[Outcome], None] = _ignore) -> ResultCache | None:
    """A `RedisCache` on `redis_url` when one is given (shared by the replicas; Redis's `maxmemory`
    bounds it, so `max_bytes` is unused), else an `InProcessCache` of this replica alone, or None
    (result caching off) when `max_bytes` is 0, as the server settings' `cache_max_bytes` says."""
    if redis_url:
        return RedisCache(redis_url, ttl_seconds, retry_seconds, clock, on_lookup=on_lookup)
    if max_bytes == 0:
        return None
    return InProcessCache(max_bytes, ttl_seconds, clock, on_lookup=on_lookup)
