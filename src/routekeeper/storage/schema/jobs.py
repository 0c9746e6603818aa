"""The tables of the ``jobs`` and ``job_events`` surfaces."""

from __future__ import annotations

from sqlalchemy import JSON, Column, ForeignKey, Index, Table

from routekeeper.storage.schema import BigIntId, metadata
from routekeeper.storage.types import BoundedInteger, ClientString, ClientText, UTCDateTime

jobs = Table(
    "jobs",
    metadata,
    Column("id", ClientString(40), primary_key=True),
    Column("tenant_id", ClientString(64), nullable=False),
    Column("kind", ClientString(64), nullable=False),
    Column("status", ClientString(16), nullable=False),
    Column("params", JSON, nullable=False),
    Column("input", JSON, nullable=False),
    Column("routing_config", JSON, nullable=False),
    Column("routing_hash", ClientString(64), nullable=False),
    Column("attempt", BoundedInteger, nullable=False),
    Column("max_attempts", BoundedInteger, nullable=False),
    Column("budget_start", BoundedInteger, nullable=False),
    Column("next_event", BoundedInteger, nullable=False),
    Column("lease_owner", ClientString(40), nullable=True),
    Column("lease_expires_at", UTCDateTime(), nullable=True),
    Column("heartbeat_at", UTCDateTime(), nullable=True),
    Column("checkpoint", JSON, nullable=True),
    Column("progress_done", BoundedInteger, nullable=False),
    Column("progress_total", BoundedInteger, nullable=True),
    Column("progress_unit", ClientString(64), nullable=True),
    Column("progress_message", ClientText, nullable=True),
    Column("result", JSON, nullable=True),
    Column("error", ClientText, nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("started_at", UTCDateTime(), nullable=True),
    Column("finished_at", UTCDateTime(), nullable=True),
    # Lists (by tenant, status, kind), claiming (queued, oldest first), recovery (leased
    # jobs) and retention (finished ones by age).
    Index("ix_jobs_tenant_id_id", "tenant_id", "id"),
    Index("ix_jobs_tenant_id_status_id", "tenant_id", "status", "id"),
    Index("ix_jobs_tenant_id_kind_id", "tenant_id", "kind", "id"),
    Index("ix_jobs_status_id", "status", "id"),
    Index("ix_jobs_finished_at", "finished_at"),
    Index("ix_jobs_created_at", "created_at"),
)

job_events = Table(
    "job_events",
    metadata,
    Column("id", BigIntId, primary_key=True, autoincrement=True),
    Column(
        "job_id",
        ClientString(40),
        ForeignKey("jobs.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("tenant_id", ClientString(64), nullable=False),
    Column("seq", BoundedInteger, nullable=False),
    Column("kind", ClientString(32), nullable=False),
    Column("status", ClientString(16), nullable=False),
    Column("attempt", BoundedInteger, nullable=False),
    Column("occurred_at", UTCDateTime(), nullable=False),
    Column("data", JSON, nullable=False),
    # A job's events are read in order after a number; a number is taken once.
    Index("ix_job_events_job_id_seq", "job_id", "seq", unique=True),
)
