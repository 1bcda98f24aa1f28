"""The one settings object. Every knob is a ``CHARTER_*`` environment variable.

With nothing set, Charter runs embedded: a SQLite file and a filesystem Celery
transport under ``data_dir``, so no server is needed. Set ``CHARTER_DATABASE_URL``
and ``CHARTER_BROKER_URL`` to run on PostgreSQL and Redis.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from charter.core.documents import Bounds

_PLACEHOLDER_SECRETS = {"", "changeme", "change-me", "secret", "dev-secret-do-not-use"}
SECRET_MIN_CHARS = 43  # secrets.token_urlsafe(32): 32 random bytes in base64url


def strong_secret(secret: str) -> bool:
    """At least 32 random bytes' worth: 43+ characters, not a placeholder, not a
    short pattern repeated (a random 43-character key has ~38 distinct characters, a
    64-character hex key nearly always all 16)."""
    value = secret.strip()
    return (
        len(value) >= SECRET_MIN_CHARS
        and value.lower() not in _PLACEHOLDER_SECRETS
        and len(set(value)) >= 8
    )


_REPO_ROOT = Path(__file__).resolve().parent.parent


class ClientSettings(BaseSettings):
    """What a process that reaches Charter only over its API needs (the SDK, the CLI's
    client commands, the trainer): never the server's key-hashing secret, so such a
    process starts in production without it."""

    model_config = SettingsConfigDict(env_prefix="CHARTER_", env_file=".env", extra="ignore")

    env: Literal["development", "test", "production"] = "development"
    log_format: Literal["json", "text"] | None = Field(
        default=None,
        description="Log lines as JSON (one object a line, for a log collector) or text; "
        "by default JSON in production, text otherwise (docs/OPERATIONS.md).",
    )
    api_url: str = Field(default="http://127.0.0.1:8000", description="Where clients find it.")
    api_key: str | None = Field(default=None, description="Key used by the CLI, SDK and trainer.")
    run_lease_seconds: float = Field(
        default=300.0, gt=0, description="A trainer's claim on a run expires unless it heartbeats."
    )

    # Models (the workers' and the trainer's)
    models: dict[str, str] = Field(default_factory=dict, description="Model name -> directory.")
    models_dir: Path = Field(
        default=Path.home() / ".cache" / "charter" / "models",
        description="Where prepared models (e.g. smollm2) are cached.",
    )
    artifacts_dir: Path = Field(
        default=Path(".charter") / "artifacts",
        description="The artifact store: a run may report artifacts under <dir>/runs/<id> only.",
    )

    @property
    def log_json(self) -> bool:
        """Whether logs are JSON lines: ``log_format``, else JSON in production."""
        return (self.log_format or ("json" if self.env == "production" else "text")) == "json"


class Settings(ClientSettings):
    """The server's settings (gateway, workers, sweeper, embedded runs): the client's
    and everything that touches the database, the broker and the engines."""

    data_dir: Path = Field(default=Path(".charter"), description="Embedded database and broker.")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default SQLite.")
    database_pool_size: int = Field(
        default=4,
        ge=1,
        le=200,
        description="PostgreSQL connections a process keeps (as many again may overflow); "
        "the gateway admits this many requests at a time. 4 measured best of 4/10/20 on "
        "2 cores (docs/BENCHMARKS.md, API latency); more cores or a remote database "
        "may want more.",
    )
    admission_wait_seconds: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description="How long a request may wait for one of the gateway's database "
        "connections before it is answered 503 with Retry-After (the database is saturated).",
    )
    broker_url: str | None = Field(default=None, description="Celery broker; default filesystem.")
    secret_key: str = Field(default="dev-secret-do-not-use", description="Peppers API-key hashes.")

    # Gateway
    max_body_bytes: int = Field(default=64 * 1024 * 1024, ge=1024, description="413 above this.")
    max_upload_bytes: int = Field(
        default=1024 * 1024 * 1024,
        ge=1024,
        description="413 above this for POST /v1/batches/upload without an Idempotency-Key: "
        "it streams into the database instead of holding the body (1M rows of ~400 bytes "
        "fit; with a key the body is held to hash it, so max_body_bytes applies).",
    )
    max_batch_rows: int = Field(default=1_000_000, ge=1, description="Rows per prompt batch.")
    page_limit_max: int = Field(default=1000, ge=1, description="Largest page a list returns.")
    idempotency_ttl_seconds: float = Field(
        default=86_400.0, gt=0, description="Idempotency-Key records are replayed this long."
    )
    audit_retention_days: float | None = Field(
        default=None,
        gt=0,
        description="The sweeper deletes audit events older than this; None keeps them forever.",
    )
    freeze_batch_rows: int = Field(
        default=50_000, ge=1, description="Dataset rows a freezer writes per transaction."
    )
    policy_eval_advance_seconds: float = Field(
        default=2.0,
        gt=0,
        description="How often a gateway looks for policy evaluations whose generations "
        "are done, to submit their judges' compare jobs.",
    )
    pipeline_advance_seconds: float = Field(
        default=2.0,
        gt=0,
        description="How often a gateway polls active pipelines' stages and submits the "
        "stages whose inputs are ready.",
    )
    freeze_lease_seconds: float = Field(
        default=60.0,
        gt=0,
        description="A freezing version's lease: a gateway that dies mid-freeze leaves it to "
        "another (or to itself once restarted) this long after its last batch.",
    )
    # Bounded parsing of untrusted documents (JSON bodies, YAML constitutions, JSONL lines).
    max_json_depth: int = Field(default=32, ge=4, le=256, description="Nesting of any document.")
    max_string_chars: int = Field(
        default=1_000_000, ge=1024, description="Longest string in any JSON or YAML document."
    )
    max_jsonl_line_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="Longest line of a JSONL upload."
    )
    max_constitution_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="Canonical JSON size of a constitution."
    )
    # Rate limits (the `limits` library's notation), per API key and the scope a route needs.
    rate_limits: dict[str, str] = Field(
        default_factory=lambda: {
            "read": "1200/minute",
            "submit": "300/minute",
            "train": "1200/minute",
            "admin": "120/minute",
            "review": "600/minute",  # people clicking through a queue, or an import
            "classify": "6000/minute",  # a deployment's filter: every request it serves
        },
        description="Scope -> limit per key, e.g. {'submit': '300/minute'}; '' disables one.",
    )
    auth_failure_limit: str = Field(
        default="30/minute", description="Failed authentications per client address."
    )
    trusted_proxies: str = Field(
        default="",
        description="Comma list of proxy addresses whose X-Forwarded-For is believed; "
        "none by default, so a client cannot pick the address its limits are counted on.",
    )
    dashboard_session_hours: float = Field(
        default=8.0,
        gt=0,
        le=168,
        description="How long a dashboard login (session cookie) lasts before it must log in "
        "again; revoking the key ends its sessions at once.",
    )
    rate_limit_storage: str | None = Field(
        default=None,
        description="limits storage URI; default the broker's Redis, else in memory.",
    )

    # Work execution
    chunk_size: int = Field(default=32, ge=1, le=1024, description="Items per worker task.")
    lease_seconds: float = Field(
        default=120.0, gt=0, description="A claim expires unless its worker extends it."
    )
    max_attempts: int = Field(default=3, ge=1, le=100, description="Then an item fails.")
    sweep_interval_seconds: float = Field(default=30.0, gt=0, description="Sweeper period.")
    visibility_timeout_seconds: int = Field(default=7200, ge=1, description="Redis redelivery.")
    republish_after_seconds: float = Field(
        default=600.0,
        gt=0,
        description="A queued chunk whose message went out this long ago is re-sent when "
        "the broker's queue holds fewer messages than it should (Redis lost them); a "
        "backlog that is only waiting is never re-sent.",
    )

    # Webhooks (sent by the sweeper)
    webhook_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        le=60,
        description="Per-request limit on a webhook delivery (connect, send, read); a slower "
        "receiver counts as a failed attempt and is retried.",
    )
    webhook_max_retry_hours: float = Field(
        default=24.0,
        ge=0,
        le=24 * 7,
        description="A delivery still failing this long after its first attempt (or its "
        "resend) is marked failed; attempts back off exponentially (with jitter) until then.",
    )
    webhook_concurrency: int = Field(
        default=8,
        ge=1,
        le=64,
        description="Deliveries sent at once per sweep, so one hanging receiver does not "
        "hold back the others.",
    )
    webhook_batch_size: int = Field(
        default=100,
        ge=1,
        le=10_000,
        description="Due deliveries claimed per round; a sweep sends rounds until none is due.",
    )

    # Workers
    worker_engine: Literal["transformers", "vllm", "scripted"] = "transformers"
    worker_models: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["smollm2"],
        description="Comma list of models this worker serves; run:* loads any completed "
        "run's model on demand, a run:<id> is loaded at start and kept.",
    )
    worker_run_model_slots: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Run models (run:*) a worker process keeps loaded besides the ones it "
        "lists, least recently used unloaded first. 1 on vLLM, whose memory share leaves "
        "no room for a second model.",
    )
    worker_device: str = Field(default="cpu", description="transformers: cpu, cuda, cuda:1 ...")
    worker_dtype: str = Field(default="float32", description="Weights dtype for the engine.")
    worker_max_batch: int = Field(default=64, ge=1, le=1024, description="Sequences per forward.")
    worker_threads: int | None = Field(
        default=None, ge=1, description="CPU threads per engine; keep threads x workers <= cores."
    )
    worker_heartbeat_seconds: float = Field(default=10.0, gt=0)
    worker_shutdown_seconds: float = Field(
        default=30.0,
        ge=1,
        description="Bound on a worker's exit after SIGTERM or SIGINT. Its pool processes "
        "stop their chunk at once and give its items back (queued, the attempt not "
        "counted, published again); one still running at three quarters of this is "
        "killed and its items given back by the parent, which exits by the end of it. "
        "Keep a container's stop grace period above it.",
    )
    vllm_gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    vllm_max_model_len: int = Field(default=4096, ge=256)
    vllm_tensor_parallel_size: int = Field(default=1, ge=1)
    # Fault injection for reliability tests (workers.engines.faults); inert by default.
    fault_delay_seconds: float = Field(default=0.0, ge=0, description="Sleep per engine call.")
    fault_poison: str | None = Field(default=None, description="Fail batches containing this.")
    fault_poison_mode: Literal["raise", "exit"] = "raise"
    worker_max_batch_tokens: int = Field(
        default=2048,
        ge=64,
        le=1_048_576,
        description="transformers: token budget of one scoring pass (rows x longest row).",
    )
    worker_max_generate_tokens: int = Field(
        default=32768,
        ge=256,
        le=16_777_216,
        description="transformers: cached tokens of one generation batch (rows x (prompt + new)).",
    )

    # Constitutional classifiers, served by their own process (``charter classifier serve``).
    classifier_url: str | None = Field(
        default=None,
        description="Where the gateway reaches the classifier server (e.g. "
        "http://classifier:8100); unset, /v1/classify answers 503.",
    )
    classifier_token: str | None = Field(
        default=None,
        description="Shared secret the gateway presents to the classifier server (Bearer); "
        "set it on both when the server is reachable by anything but the gateway.",
    )
    classifier_timeout_seconds: float = Field(
        default=30.0, gt=0, le=600, description="Bound on one classify call (a stream: per line)."
    )
    classifier_cache_size: int = Field(
        default=4, ge=1, le=64, description="Classifiers one server keeps loaded (LRU)."
    )
    classifier_max_stream_tokens: int = Field(
        default=8192, ge=1, le=1_000_000, description="Tokens one classify stream may send."
    )

    constitutions_dir: Path = Field(default=_REPO_ROOT / "constitutions")

    @field_validator("classifier_url", "classifier_token", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("classifier_token")
    @classmethod
    def _long_token(cls, value: str | None) -> str | None:
        if value is not None and len(value) < 16:
            raise ValueError("a classifier token is at least 16 characters")
        return value

    @field_validator("worker_models", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip()
            if value.startswith("["):
                return json.loads(value)
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _refuse_weak_secret(self) -> Settings:
        if self.env == "production" and not strong_secret(self.secret_key):
            raise ValueError(
                "CHARTER_SECRET_KEY must hold at least 32 random bytes in production "
                '(e.g. python -c "import secrets; print(secrets.token_urlsafe(32))")'
            )
        return self

    @property
    def document_bounds(self) -> Bounds:
        """The limits every untrusted JSON or YAML document is parsed under."""
        return Bounds(max_depth=self.max_json_depth, max_string_chars=self.max_string_chars)

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'charter.db').resolve()}"

    @property
    def effective_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def broker_dir(self) -> Path:
        return (self.data_dir / "broker").resolve()


@lru_cache
def get_settings() -> Settings:
    return Settings()


def get_client_settings() -> ClientSettings:
    """Read afresh each time (a client is made once per SDK object or command), so
    a process that changes its ``CHARTER_API_*`` variables is never served stale ones."""
    return ClientSettings()
