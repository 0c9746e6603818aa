"""The declared schema, one for both dialects. Migrations in ``migrations/versions`` must
produce exactly this (a test compares them on SQLite and PostgreSQL)."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)

from routekeeper.storage.types import UTCDateTime

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

# SQLite only auto-assigns INTEGER PRIMARY KEY (the rowid alias), not BIGINT.
BigIntId = BigInteger().with_variant(Integer(), "sqlite")

runtime_replicas = Table(
    "runtime_replicas",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("phase", String(20), nullable=False),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("listen", String(255), nullable=True),
    Column("version", String(40), nullable=False),
    Column("detail", Text, nullable=True),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("heartbeat_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("stopped_at", UTCDateTime(), nullable=True),
    Index("ix_runtime_replicas_phase", "phase"),
)

runtime_events = Table(
    "runtime_events",
    metadata,
    Column("id", BigIntId, primary_key=True, autoincrement=True),
    Column("replica_id", String(40), nullable=False),
    Column("kind", String(60), nullable=False),
    Column("from_phase", String(20), nullable=True),
    Column("to_phase", String(20), nullable=True),
    Column("data", JSON, nullable=False),
    Column("occurred_at", UTCDateTime(), nullable=False),
    Index("ix_runtime_events_replica_id_id", "replica_id", "id"),
    Index("ix_runtime_events_occurred_at", "occurred_at"),
)

router_replay = Table(
    "router_replay",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(64), nullable=False),
    Column("request_id", String(64), nullable=False),
    Column("replica_id", String(40), nullable=False),
    Column("endpoint", String(64), nullable=False),
    Column("session_id", String(256), nullable=True),
    Column("decision", String(128), nullable=True),
    Column("signals", JSON, nullable=False),
    Column("requested_model", String(256), nullable=False),
    Column("selected_model", String(128), nullable=True),
    Column("stream", Boolean, nullable=False),
    Column("upstream_status", Integer, nullable=True),
    Column("lifecycle_state", String(16), nullable=False),
    Column("terminal_reason", String(32), nullable=True),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("completed_at", UTCDateTime(), nullable=True),
    Column("routing_ms", Float, nullable=True),
    Column("ttfb_ms", Float, nullable=True),
    Column("total_ms", Float, nullable=True),
    Column("prompt_tokens", Integer, nullable=True),
    Column("completion_tokens", Integer, nullable=True),
    Column("total_tokens", Integer, nullable=True),
    Column("cost", Float, nullable=True),
    Column("currency", String(8), nullable=True),
    Column("error", Text, nullable=True),
    Column("request_body", Text, nullable=True),
    Column("request_body_truncated", Boolean, nullable=False),
    Column("response_body", Text, nullable=True),
    Column("response_body_truncated", Boolean, nullable=False),
    # The captured prompt (user messages' text), searched by GET /api/replay?q=. The full-text
    # objects over it are dialect-specific: see migration 0003 and FULL_TEXT_OBJECTS.
    Column("prompt_text", Text, nullable=True),
    Index("ix_router_replay_tenant_id_id", "tenant_id", "id"),
    Index("ix_router_replay_decision_id", "decision", "id"),
    Index("ix_router_replay_selected_model_id", "selected_model", "id"),
    Index("ix_router_replay_lifecycle_state_id", "lifecycle_state", "id"),
    Index("ix_router_replay_session_id_id", "session_id", "id"),
    Index("ix_router_replay_started_at", "started_at"),
    # Recovery finds what a dead replica left in flight without scanning finished records.
    Index(
        "ix_router_replay_in_progress",
        "replica_id",
        postgresql_where=text("lifecycle_state = 'in_progress'"),
        sqlite_where=text("lifecycle_state = 'in_progress'"),
    ),
)

# Full-text search objects created by migrations only (FTS5 table and its shadow tables on
# SQLite, a GIN expression index on PostgreSQL); the schema comparison leaves them out.
FULL_TEXT_OBJECTS = ("router_replay_fts", "ix_router_replay_prompt_fts")

# Which tables hold each registered surface (tests check this covers the registry exactly).
SURFACE_TABLES: dict[str, tuple[Table, ...]] = {
    "runtime_status": (runtime_replicas,),
    "runtime_events": (runtime_events,),
    "router_replay": (router_replay,),
}
