"""`lmforge serve`'s settings: which models, and the limits that keep the server answering.

Defaults follow the serving systems users compare us with: Triton's dynamic batcher (64 rows, 2 ms
queue delay), TGI's bounded admission, LitServe's 30 s request timeout. Every limit turns excess
into a fast 4xx/503 instead of a slow answer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from lmforge.config import Config
from lmforge.serve.batcher import BatcherConfig

Runtime = Literal["eager", "int8", "onnx", "onnx-int8"]


class ModelSpec(Config):
    path: Path
    """A model folder, or an export folder for the onnx runtimes."""
    runtime: Runtime = "eager"
    name: str | None = None
    """The name clients use (`model` in OpenAI bodies, `/v2/models/{name}`); default: the folder's name."""


class ServeSettings(Config):
    models: list[ModelSpec] = Field(min_length=1)
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    device: str = "auto"
    threads: int | None = Field(None, ge=1)
    """Threads torch uses for one forward pass; default: torch's (the machine's cores). The event
    loop and the batchers run beside them in the same process."""
    api_keys_file: Path | None = None
    """One key per line; with none here and none in the environment the server is open (local use)."""
    api_keys_env: str = "LMFORGE_API_KEYS"
    admin_keys_env: str = "LMFORGE_ADMIN_KEYS"
    """Admin keys may also load model versions (`POST /admin/models/{name}/load`)."""
    rate_limit: float = Field(50.0, gt=0)
    """Requests per second per API key (token bucket); over it: 429 with Retry-After."""
    rate_burst: int = Field(100, ge=1)
    max_input_chars: int = Field(20_000, ge=1)
    """Longest text (or prompt) a request may carry."""
    max_inputs: int = Field(64, ge=1)
    """Most texts in one request (rows of one batch at most)."""
    max_tokens: int = Field(512, ge=1)
    """Most tokens one generation request may ask for."""
    request_timeout_s: float = Field(30.0, gt=0)
    """A request still waiting after this long gets 503 (LitServe's default)."""
    batcher: BatcherConfig = BatcherConfig()
    max_running: int = Field(16, ge=1)
    """Sequences decoded together by continuous batching."""
    max_waiting: int = Field(256, ge=0)
    """Generation requests waiting for a slot; beyond: 503 with Retry-After."""
    redis_url: str | None = None
    """Result cache in Redis (shared by replicas); none: an in-process LRU."""
    cache_ttl_s: float = Field(3600.0, gt=0)
    cache_max_bytes: int = Field(64 << 20, ge=0)
    """In-process result cache size; 0 turns result caching off."""
    prefix_cache_bytes: int = Field(256 << 20, ge=0)
    """Recurrence memory kept for prompt prefixes (chat follow-ups); 0 turns it off."""
    log_requests: bool = False
    """Log request text (PII-anonymised by the curation step) besides the request line."""
