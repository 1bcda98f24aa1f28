"""ORM models shared by the gateway, the workers and the sweeper.

PostgreSQL is the source of truth; SQLite runs the same schema embedded. Work
items carry the lease (owner, expiry, attempt) that fences label writes, and
``labels.work_item_id`` is unique so an item can never get two labels.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, declared_attr, mapped_column

from charter.core.jobs import ItemState, JobStatus, RunStatus

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

Json = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
# SQLite only auto-increments an INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; every stored time is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """``DateTime(timezone=True)`` that always loads aware (UTC) values, SQLite included."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else as_utc(value)


Timestamp = UtcDateTime()


def new_id() -> str:
    return uuid.uuid4().hex


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Project(Base):
    __tablename__ = "projects"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


class ApiKey(Base):
    """Only a peppered sha256 of the key is stored; the prefix identifies it."""

    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128), default="")
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[list[str]] = mapped_column(Json)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(Timestamp)
    revoked_at: Mapped[datetime | None] = mapped_column(Timestamp)
    last_used_at: Mapped[datetime | None] = mapped_column(Timestamp)


class Constitution(Base):
    __tablename__ = "constitutions"
    __table_args__ = (UniqueConstraint("project_id", "name"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


class ConstitutionVersion(Base):
    """Immutable: new content gets the next number, identical content the old one."""

    __tablename__ = "constitution_versions"
    __table_args__ = (
        UniqueConstraint("constitution_id", "version"),
        UniqueConstraint("constitution_id", "content_hash"),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    constitution_id: Mapped[str] = mapped_column(ForeignKey("constitutions.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    content: Mapped[dict[str, Any]] = mapped_column(Json)
    content_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


class PromptBatch(Base):
    __tablename__ = "prompt_batches"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128), default="")
    row_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


class Prompt(Base):
    """One row of a batch: a prompt (text or chat messages) and optional supplied answers."""

    __tablename__ = "prompts"
    __table_args__ = (UniqueConstraint("batch_id", "position"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("prompt_batches.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    prompt: Mapped[str | None] = mapped_column(Text)
    messages: Mapped[list[dict[str, str]] | None] = mapped_column(Json)
    response: Mapped[str | None] = mapped_column(Text)
    response_a: Mapped[str | None] = mapped_column(Text)
    response_b: Mapped[str | None] = mapped_column(Text)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (Index(None, "project_id", "created_at"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(16))
    batch_id: Mapped[str] = mapped_column(ForeignKey("prompt_batches.id"))
    constitution_version_id: Mapped[str] = mapped_column(ForeignKey("constitution_versions.id"))
    constitution_ref: Mapped[str] = mapped_column(String(80))
    model: Mapped[str] = mapped_column(String(128))
    params: Mapped[dict[str, Any]] = mapped_column(Json)
    seed: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED.value)
    item_count: Mapped[int] = mapped_column(Integer, default=0)
    chunk_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(Timestamp)


class WorkItem(Base):
    """The unit a worker claims. ``attempt`` is the fencing token of the current lease."""

    __tablename__ = "work_items"
    __table_args__ = (
        UniqueConstraint("job_id", "prompt_id"),
        Index(None, "job_id", "chunk"),
        Index(None, "status", "lease_expires_at"),
        # Room for HOT updates of the unindexed columns (migration 0004).
        {"postgresql_with": {"fillfactor": 70}},
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id"))
    chunk: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=ItemState.QUEUED.value)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column(Timestamp)
    last_error: Mapped[str | None] = mapped_column(Text)
    published_at: Mapped[datetime | None] = mapped_column(Timestamp)
    updated_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow, onupdate=utcnow)


class Label(Base):
    """Append-only: relabelling writes new rows. Every row carries its provenance."""

    __tablename__ = "labels"
    __table_args__ = (Index(None, "project_id", "id"), Index(None, "job_id", "id"))
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    work_item_id: Mapped[int] = mapped_column(ForeignKey("work_items.id"), unique=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id"))
    kind: Mapped[str] = mapped_column(String(16))
    conversation: Mapped[list[dict[str, str]]] = mapped_column(Json)
    response: Mapped[str | None] = mapped_column(Text)
    completion: Mapped[str | None] = mapped_column(Text)
    response_a: Mapped[str | None] = mapped_column(Text)
    response_b: Mapped[str | None] = mapped_column(Text)
    p_a: Mapped[float | None] = mapped_column(Float)
    p_a_forward: Mapped[float | None] = mapped_column(Float)
    p_a_swapped: Mapped[float | None] = mapped_column(Float)
    swap_disagreement: Mapped[bool | None] = mapped_column(Boolean)
    choice_mass: Mapped[float | None] = mapped_column(Float)
    choice_logprobs: Mapped[dict[str, Any] | None] = mapped_column(Json)
    reasoning: Mapped[dict[str, Any] | None] = mapped_column(Json)
    rounds: Mapped[list[dict[str, Any]] | None] = mapped_column(Json)
    principle_ids: Mapped[list[str]] = mapped_column(Json)
    constitution_version_id: Mapped[str] = mapped_column(ForeignKey("constitution_versions.id"))
    constitution_ref: Mapped[str] = mapped_column(String(80))
    model: Mapped[str] = mapped_column(String(128))
    model_revision: Mapped[str] = mapped_column(String(64))
    engine: Mapped[str] = mapped_column(String(32))
    template_version: Mapped[str] = mapped_column(String(128))
    template_hash: Mapped[str] = mapped_column(String(64))
    job_params: Mapped[dict[str, Any]] = mapped_column(Json)
    """Every parameter of the job that produced the label (rounds, swap, sampling, ...)."""
    engine_config_hash: Mapped[str | None] = mapped_column(String(16))
    """``EngineConfig.compute_hash()`` of the engine that produced the label."""
    sampling_hash: Mapped[str | None] = mapped_column(String(16))
    """``SamplingParams.compute_hash()`` of the job's generation sampling (None: nothing sampled)."""
    seed: Mapped[int] = mapped_column(BigInteger)
    worker_id: Mapped[str] = mapped_column(String(128))
    attempt: Mapped[int] = mapped_column(Integer)
    timings: Mapped[dict[str, Any]] = mapped_column(Json)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


class Worker(Base):
    """Heartbeats written by worker processes, so operators can see who serves what."""

    __tablename__ = "workers"
    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    engine: Mapped[str] = mapped_column(String(32))
    models: Mapped[list[str]] = mapped_column(Json)
    started_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    items_done: Mapped[int] = mapped_column(BigInteger, default=0)
    # Written with each heartbeat (migration 0006): what the engine did since the worker
    # started, for the gateway's /metrics; mean batch size = batch_items / engine_calls.
    current_chunk: Mapped[str | None] = mapped_column(String(64))
    """``job_id:chunk`` the worker is running now; None when idle."""
    engine_calls: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    engine_seconds: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    batch_items: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    tokens_in: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    tokens_out: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class Dataset(Base):
    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("project_id", "name"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


class DatasetVersion(Base):
    """A frozen snapshot: the filter that chose it and, row by row, the exact labels.

    ``freezing`` -> ``ready`` (or ``failed``): a version over labels is frozen in the
    background, batch by batch (``freeze_cursor`` is the last label id frozen, labels
    above ``freeze_max_label_id`` are never taken), by whoever holds its lease;
    ``row_count`` and ``checksum`` are set only when it is ``ready``.
    """

    __tablename__ = "dataset_versions"
    __table_args__ = (UniqueConstraint("dataset_id", "version"), Index(None, "state"))
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    filter: Mapped[dict[str, Any]] = mapped_column(Json)
    mix: Mapped[dict[str, Any] | None] = mapped_column(Json)
    row_count: Mapped[int] = mapped_column(Integer, default=0)
    checksum: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default="ready")
    rows_total: Mapped[int] = mapped_column(Integer, default=0)
    rows_done: Mapped[int] = mapped_column(Integer, default=0)
    freeze_cursor: Mapped[int | None] = mapped_column(BigInteger)
    freeze_max_label_id: Mapped[int | None] = mapped_column(BigInteger)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column(Timestamp)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    ready_at: Mapped[datetime | None] = mapped_column(Timestamp)


class DatasetRow(Base):
    """Row ``seq`` of a dataset version: a label, or a user-supplied mixed-in row."""

    __tablename__ = "dataset_rows"
    version_id: Mapped[str] = mapped_column(
        ForeignKey("dataset_versions.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    label_id: Mapped[int | None] = mapped_column(ForeignKey("labels.id"))
    row: Mapped[dict[str, Any] | None] = mapped_column(Json)


class TrainingRun(Base):
    __tablename__ = "training_runs"
    __table_args__ = (Index(None, "project_id", "created_at"), Index(None, "status"))
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(16))
    dataset_version_id: Mapped[str | None] = mapped_column(ForeignKey("dataset_versions.id"))
    config: Mapped[dict[str, Any]] = mapped_column(Json)
    config_hash: Mapped[str | None] = mapped_column(String(16))
    """``config_hash()`` of the normalised run config, computed at submission."""
    trained_config_hash: Mapped[str | None] = mapped_column(String(16))
    """The hash the trainer reported having trained with (must equal ``config_hash``)."""
    status: Mapped[str] = mapped_column(String(16), default=RunStatus.QUEUED.value)
    artifact_uri: Mapped[str | None] = mapped_column(Text)
    checkpoint: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    # sha256 of the secret token the claim returned; every lease-holder call presents it.
    lease_token_hash: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column(Timestamp)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(Timestamp)
    finished_at: Mapped[datetime | None] = mapped_column(Timestamp)


class RunMetric(Base):
    __tablename__ = "run_metrics"
    __table_args__ = (Index(None, "run_id", "step"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("training_runs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)
    metrics: Mapped[dict[str, float]] = mapped_column(Json)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


class IdempotencyRecord(Base):
    """The first response to a POST with an ``Idempotency-Key``, replayed on retries.

    Bound to the API key that made the request (not just its project), so no other
    key can ever read it; expired records are ignored and swept. A response that held
    a secret is stored with the secret redacted and ``redacted`` set.
    """

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("api_key_id", "key"), Index(None, "expires_at"))
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    api_key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    response_body: Mapped[str] = mapped_column(Text)
    redacted: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(Timestamp)


class DashboardSession(Base):
    """A dashboard login: the cookie holds a random token, ``id`` is its sha256.

    Made from an API key with the read scope; the key's revocation or expiry ends it
    (checked on every request), and deleting the key deletes it. ``csrf_token`` is
    the synchroniser token that the session's state-changing forms must carry.
    """

    __tablename__ = "dashboard_sessions"
    __table_args__ = (Index(None, "api_key_id"), Index(None, "expires_at"))
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    api_key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"))
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(Timestamp)
    last_seen: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


# Audit log --------------------------------------------------------------------------


class AuditEvent(Base):
    """One state-changing API call: who (key), what (route, object ids), when, how it
    ended. Written by the gateway's unit of work (a success in the request's own
    transaction); never updated. The key's prefix is kept in clear, and ``api_key_id``
    is no foreign key: the log outlives a deleted key, and a reference would make each
    insert wait for the key row's lock (``auth._touch`` holds it until its request ends)."""

    __tablename__ = "audit_events"
    __table_args__ = (
        Index(None, "project_id", "id"),
        Index(None, "created_at"),
        Index(None, "route"),
        Index(None, "key_prefix"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    api_key_id: Mapped[str | None] = mapped_column(String(32))
    key_prefix: Mapped[str] = mapped_column(String(32))
    method: Mapped[str] = mapped_column(String(8))
    route: Mapped[str] = mapped_column(String(255))
    """The route's template, e.g. ``/v1/jobs/{job_id}/cancel``."""
    path: Mapped[str] = mapped_column(String(2048))
    object_ids: Mapped[dict[str, str]] = mapped_column(Json)
    """The path parameters, plus ``id``: what the call created, when its answer has one."""
    status_code: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(16))
    """``succeeded`` (2xx/3xx), ``refused`` (4xx) or ``failed`` (5xx)."""
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_detail: Mapped[str | None] = mapped_column(Text)
    request_id: Mapped[str | None] = mapped_column(String(128))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    replayed: Mapped[bool] = mapped_column(Boolean, default=False)
    """The answer was an ``Idempotency-Key`` replay: the write is the first call's event."""
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


# Webhooks ---------------------------------------------------------------------------


class WebhookEndpoint(Base):
    """A project's subscriber: deliveries of the listed event types go to ``url``.

    ``secret`` is the Standard Webhooks signing secret (``whsec_`` + base64); it is
    shown once, at creation and on rotation, and never returned again.
    """

    __tablename__ = "webhook_endpoints"
    __table_args__ = (Index(None, "project_id", "created_at"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(String(256), default="")
    event_types: Mapped[list[str]] = mapped_column(Json)
    secret: Mapped[str] = mapped_column(String(128))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    disabled_reason: Mapped[str | None] = mapped_column(Text)


class WebhookDelivery(Base):
    """One event for one endpoint (the outbox row), its attempts and their outcome.

    ``pending`` rows whose ``next_attempt_at`` has come are sent by the sweeper; a
    claim pushes ``next_attempt_at`` forward (the lease) before the HTTP call, so a
    crashed sender's rows come due again. ``msg_id`` is the ``webhook-id`` header and
    stays the same across retries and resends, so receivers can deduplicate.
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index(None, "status", "next_attempt_at"),
        Index(None, "endpoint_id", "created_at"),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    project_id: Mapped[str] = mapped_column(String(32))
    event_type: Mapped[str] = mapped_column(String(64))
    msg_id: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(Json)
    status: Mapped[str] = mapped_column(String(16))
    """A ``charter.core.webhook_signing.DeliveryStatus``."""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    last_attempt_at: Mapped[datetime | None] = mapped_column(Timestamp)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    cycle_started_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    """Start of the current attempt cycle (creation or resend): retries stop a bounded time after."""
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(Timestamp)


# Human review -----------------------------------------------------------------------


class ReviewQueue(Base):
    """A sample of a job's labels opened for human review (``charter.core.review_sampling``).

    ``target_reached_at`` is set once every item has at least one verdict.
    """

    __tablename__ = "review_queues"
    __table_args__ = (Index(None, "project_id", "created_at"), Index(None, "job_id"))
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    strategy: Mapped[str] = mapped_column(String(16))
    by: Mapped[str | None] = mapped_column(String(32))
    seed: Mapped[int] = mapped_column(BigInteger)
    size: Mapped[int] = mapped_column(Integer)
    """Items in the queue (the size asked for, capped by the labels available)."""
    requested_size: Mapped[int] = mapped_column(Integer)
    created_by_key_id: Mapped[str | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    target_reached_at: Mapped[datetime | None] = mapped_column(Timestamp)


class ReviewQueueItem(Base):
    """Position ``position`` of a queue: one label, and the stratum it was drawn from."""

    __tablename__ = "review_queue_items"
    __table_args__ = (UniqueConstraint("queue_id", "label_id"),)
    queue_id: Mapped[str] = mapped_column(
        ForeignKey("review_queues.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    label_id: Mapped[int] = mapped_column(ForeignKey("labels.id", ondelete="CASCADE"), index=True)
    stratum: Mapped[str | None] = mapped_column(String(256))


class ReviewVerdict(Base):
    """A human's verdict on one AI label, stored apart from (and never written into) it.

    One row per reviewer and label; a reviewer is the API key plus the optional
    ``reviewer`` name (one key may be shared by named people). A second verdict by
    the same reviewer replaces the first: ``revision`` counts the verdicts given and
    ``history`` keeps the earlier ones. ``agrees`` is whether it matches the AI
    label, fixed when written (labels never change).
    """

    __tablename__ = "review_verdicts"
    __table_args__ = (
        UniqueConstraint("label_id", "api_key_id", "reviewer"),
        Index(None, "job_id", "id"),
        Index(None, "project_id", "id"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    label_id: Mapped[int] = mapped_column(ForeignKey("labels.id", ondelete="CASCADE"))
    queue_id: Mapped[str | None] = mapped_column(
        ForeignKey("review_queues.id", ondelete="SET NULL")
    )
    api_key_id: Mapped[str] = mapped_column(String(32))
    """The reviewing key's id (not a foreign key: imported verdicts keep their reviewer)."""
    key_prefix: Mapped[str] = mapped_column(String(32))
    reviewer: Mapped[str] = mapped_column(String(128), default="")
    choice: Mapped[str | None] = mapped_column(String(8))
    """Comparisons: ``A``, ``B`` or ``tie``."""
    satisfies: Mapped[bool | None] = mapped_column(Boolean)
    """Revisions: whether the revision satisfies the principle."""
    note: Mapped[str | None] = mapped_column(Text)
    agrees: Mapped[bool] = mapped_column(Boolean)
    source: Mapped[str] = mapped_column(String(16), default="api")
    """``api`` or ``import``."""
    revision: Mapped[int] = mapped_column(Integer, default=1)
    history: Mapped[list[dict[str, Any]]] = mapped_column(Json, default=list)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


# Feedback templates -----------------------------------------------------------------


class _TemplateVersion:
    """The columns of an immutable template version: ``spec`` holds every field but the
    name and version, ``sha256`` what labels record as their ``template_hash`` basis."""

    @declared_attr.directive
    def __table_args__(cls) -> tuple[UniqueConstraint]:  # one constraint object per table
        return (UniqueConstraint("project_id", "name", "version"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(32))
    version: Mapped[int] = mapped_column(Integer)
    spec: Mapped[dict[str, Any]] = mapped_column(Json)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


class FeedbackTemplateVersion(_TemplateVersion, Base):
    """One version of a project's own feedback template (``charter.core.feedback_templates``)."""

    __tablename__ = "feedback_templates"


# Judge evaluation -------------------------------------------------------------------


class GoldSet(Base):
    """One immutable version of a gold set: comparisons with a known answer.

    Its rows are the prompts of ``batch_id`` (so its evaluations are ordinary
    ``compare`` jobs on that batch); ``content_hash`` is the sha256 of the canonical rows,
    and pushing the same rows again answers this version instead of making another."""

    __tablename__ = "gold_sets"
    __table_args__ = (UniqueConstraint("project_id", "name", "version"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    batch_id: Mapped[str] = mapped_column(ForeignKey("prompt_batches.id"))
    row_count: Mapped[int] = mapped_column(Integer)
    content_hash: Mapped[str] = mapped_column(String(64))
    categories: Mapped[dict[str, int]] = mapped_column(Json)
    """Rows per category (rows without one are not counted here)."""
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


class GoldItem(Base):
    """Row ``position`` of a gold set: its prompt and the correct answer."""

    __tablename__ = "gold_items"
    gold_set_id: Mapped[str] = mapped_column(
        ForeignKey("gold_sets.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id"))
    answer: Mapped[str] = mapped_column(String(1))
    """``a`` or ``b``: the better response."""
    p_gold: Mapped[float | None] = mapped_column(Float)
    """Soft gold: P(response a is better), on the answer's side of 0.5."""
    category: Mapped[str | None] = mapped_column(String(64))


class EvalRun(Base):
    """A judge evaluation: one gold set scored by one or more judge configurations.

    ``configs`` are the normalised configurations (``charter.core.judge_eval``);
    ``injection`` (or None) the adversarial part: the attack ids, the suite's version and
    hash, how many gold items it covers and whether the undefended runs were asked for.
    Its rows in ``eval_jobs`` are ordinary jobs; its status is theirs."""

    __tablename__ = "eval_runs"
    __table_args__ = (Index(None, "project_id", "created_at"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128), default="")
    gold_set_id: Mapped[str] = mapped_column(ForeignKey("gold_sets.id"))
    configs: Mapped[list[dict[str, Any]]] = mapped_column(Json)
    injection: Mapped[dict[str, Any] | None] = mapped_column(Json)
    variants_batch_id: Mapped[str | None] = mapped_column(ForeignKey("prompt_batches.id"))
    """The injected pairs: gold item ``p // A`` with attack ``p % A`` at position ``p``."""
    seed: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


class EvalJob(Base):
    """The job that scored one (configuration, variant) of an evaluation."""

    __tablename__ = "eval_jobs"
    eval_run_id: Mapped[str] = mapped_column(
        ForeignKey("eval_runs.id", ondelete="CASCADE"), primary_key=True
    )
    config_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    variant: Mapped[str] = mapped_column(String(24), primary_key=True)
    """``clean`` or ``injected``, with ``-undefended`` when neutralisation was off."""
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), unique=True)


class PolicyEval(Base):
    """A policy evaluation (``charter.core.policy_eval_plans``): each policy answers one
    prompt batch (``generate`` jobs), then each judge compares the answers pairwise
    (``compare`` jobs on ``pairs_batch_id``), and Elo scores are fitted from the labels.

    ``stage`` is ``generating`` until the gateway's advancer has built the pairs batch and
    submitted the judges' jobs in one transaction (then ``comparing``), or found nothing
    to compare (``failed``, with ``error``), or it or one of its generations was cancelled
    (``cancelled``: never advanced). ``judges`` are stored pinned (constitution
    ``name@version``, template version), so the later jobs judge as submitted."""

    __tablename__ = "policy_evals"
    __table_args__ = (Index(None, "project_id", "created_at"), Index(None, "stage"))
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128), default="")
    batch_id: Mapped[str] = mapped_column(ForeignKey("prompt_batches.id"))
    policies: Mapped[list[dict[str, Any]]] = mapped_column(Json)
    judges: Mapped[list[dict[str, Any]]] = mapped_column(Json)
    anchor: Mapped[str] = mapped_column(String(40))
    plot: Mapped[list[str] | None] = mapped_column(Json)
    """The judges on the plot's x and y axes, or None (one judge)."""
    bootstrap: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(BigInteger)
    chunk_size: Mapped[int | None] = mapped_column(Integer)
    stage: Mapped[str] = mapped_column(String(16), default="generating")
    error: Mapped[str | None] = mapped_column(Text)
    pairs_batch_id: Mapped[str | None] = mapped_column(ForeignKey("prompt_batches.id"))
    slots: Mapped[list[list[int]] | None] = mapped_column(Json, deferred=True)
    """Row ``p`` of the pairs batch: ``[prompt position, policy index as A, as B]``
    (up to ~2 MB: loaded only when read, by the report)."""
    comparisons: Mapped[int | None] = mapped_column(Integer)
    """Rows of the pairs batch, each judge's comparisons; None until it is built."""
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    advanced_at: Mapped[datetime | None] = mapped_column(Timestamp)


class PolicyEvalJob(Base):
    """A job of a policy evaluation: a policy's ``generate`` or a judge's ``compare``."""

    __tablename__ = "policy_eval_jobs"
    policy_eval_id: Mapped[str] = mapped_column(
        ForeignKey("policy_evals.id", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[str] = mapped_column(String(16), primary_key=True)
    """``generate`` (``index`` is the policy's) or ``compare`` (the judge's)."""
    index: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), unique=True)


class Pipeline(Base):
    """The whole recipe as one object (``charter.core.pipeline_plans``): SL-CAI, the SFT
    data and run, RL-CAI with the SFT model, the preference data, the PM, the RL runs and
    an Elo evaluation, each a stage submitted by the gateway's advancer once the stages
    it needs have completed.

    ``spec`` is stored pinned (constitutions as ``name@version``, a seed), so a stage
    submitted later, resumed or re-run is built from exactly what was submitted.
    ``state`` is ``active`` while the advancer moves it on, then ``completed``,
    ``failed`` (``error`` names the stage and why; resumable) or ``cancelled``."""

    __tablename__ = "pipelines"
    __table_args__ = (Index(None, "project_id", "created_at"), Index(None, "state"))
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128), default="")
    spec: Mapped[dict[str, Any]] = mapped_column(Json)
    state: Mapped[str] = mapped_column(String(16), default="active")
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    advanced_at: Mapped[datetime | None] = mapped_column(Timestamp)


class PipelineStage(Base):
    """One attempt of one stage of a pipeline: what it was submitted with (``inputs``:
    the exact request body and the upstream attempts it read) and what it made. The
    latest attempt of a stage is its current one."""

    __tablename__ = "pipeline_stages"
    pipeline_id: Mapped[str] = mapped_column(
        ForeignKey("pipelines.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(16), primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="submitted")
    inputs: Mapped[dict[str, Any]] = mapped_column(Json)
    output: Mapped[str | None] = mapped_column(String(200))
    """What later stages read: the job's id, the dataset's ``name@version``, the run's
    id or the evaluation's id."""
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    dataset_version_id: Mapped[str | None] = mapped_column(
        ForeignKey("dataset_versions.id", ondelete="SET NULL")
    )
    run_id: Mapped[str | None] = mapped_column(ForeignKey("training_runs.id", ondelete="SET NULL"))
    policy_eval_id: Mapped[str | None] = mapped_column(
        ForeignKey("policy_evals.id", ondelete="SET NULL")
    )
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(Timestamp)


class CritiqueTemplateVersion(_TemplateVersion, Base):
    """One version of a project's own critique template (``charter.core.critique_templates``)."""

    __tablename__ = "critique_templates"


class PublicInputSet(Base):
    """One immutable version of a public input for a collective constitution: statements
    and who voted what on them (``charter.core.public_input``). ``data`` holds
    ``statements`` ([{id, text, author}]), ``participants`` ([id]) and ``votes`` (the
    votes cast as packed arrays, ``services.gateway.public_inputs.service.to_data``);
    ``content_hash`` is
    the sha256 of its canonical JSON, and the same input again answers this version."""

    __tablename__ = "public_inputs"
    __table_args__ = (UniqueConstraint("project_id", "name", "version"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    source_format: Mapped[str] = mapped_column(String(16))
    statement_count: Mapped[int] = mapped_column(Integer)
    participant_count: Mapped[int] = mapped_column(Integer)
    vote_count: Mapped[int] = mapped_column(Integer)
    content_hash: Mapped[str] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(Json)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
