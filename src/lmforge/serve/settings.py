"""`lmforge serve`'s settings: which models, and the limits that keep the server answering.

Defaults follow the serving systems users compare us with: Triton's dynamic batcher (64 rows, 2 ms
queue delay), TGI's bounded admission, LitServe's 30 s request timeout. Every limit turns excess
into a fast 4xx/503 instead of a slow answer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from lmforge.config import Config
from lmforge.serve.batcher import BatcherConfig

Runtime = Literal["eager", "int8", "onnx", "onnx-int8"]


class ModelSpec(Config):
    path: Path
    """A model folder, or an export folder for the onnx runtimes."""
    runtime: Runtime = "eager"
    name: str | None = None
    """The name clients use (`model` in OpenAI bodies, `/v2/models/{name}`); default: the folder's name."""


class VariantSpec(Config):
    model: str
    """A served model's name (one of `models`)."""
    weight: float = Field(1.0, gt=0)


class ExperimentSpec(Config):
    """An A/B test: requests for `name` go to a variant's model chosen by the caller's `X-User-Id`
    (GrowthBook's v2 hash of seed + id, so a user keeps their variant across restarts and replicas).
    The first variant is the control; requests without a user id get it and are not counted."""

    name: str
    """The model name clients ask for."""
    variants: list[VariantSpec] = Field(min_length=2)
    seed: str | None = None
    """Hash seed; default: `name`. A new seed reshuffles every user."""
    coverage: float = Field(1.0, gt=0, le=1)
    """Share of users in the test; the others get the control and are not counted."""

    @property
    def weights(self) -> list[float]:
        total = sum(v.weight for v in self.variants)
        return [v.weight / total for v in self.variants]


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
    records_url: str | None = None
    """The request and feedback log (`lmforge improve`, `lmforge abtest`): a SQLAlchemy URL
    (`sqlite:///records.db`, `postgresql+psycopg://user@host/db`) or a SQLite file's path; none:
    nothing is recorded and `/v1/feedback` answers 404. Text is PII-anonymised before it is written."""
    retention_days: float | None = Field(None, gt=0)
    """Requests (and their feedback) older than this are deleted, at start-up and daily."""
    review: bool = False
    """Serve the review page (`/review`) over the records' review queues."""
    experiments: list[ExperimentSpec] = []
    user_salt_env: str = "LMFORGE_USER_SALT"
    """Environment variable with the secret mixed into recorded user ids (pseudonyms, not ids)."""

    @model_validator(mode="after")
    def _review_has_records(self) -> ServeSettings:
        if self.review and not self.records_url:
            raise ValueError("review: the review page reads the records: give records_url (--records)")
        return self

    @model_validator(mode="after")
    def _variants_are_served(self) -> ServeSettings:
        served = [spec.name or spec.path.resolve().name for spec in self.models]
        for experiment in self.experiments:
            for variant in experiment.variants:
                if variant.model not in served:
                    raise ValueError(f"experiment {experiment.name!r}: variant {variant.model!r} is not a "
                                     f"served model (models: {', '.join(served)})")
        return self
