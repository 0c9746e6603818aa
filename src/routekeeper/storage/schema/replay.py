"""The table of the ``router_replay`` surface."""

from __future__ import annotations

from sqlalchemy import JSON, Boolean, Column, Float, Index, Table, text

from routekeeper.storage.schema import metadata, unmanaged
from routekeeper.storage.types import BoundedInteger, ClientString, ClientText, UTCDateTime

router_replay = Table(
    "router_replay",
    metadata,
    Column("id", ClientString(40), primary_key=True),
    Column("tenant_id", ClientString(64), nullable=False),
    Column("request_id", ClientString(64), nullable=False),
    Column("replica_id", ClientString(40), nullable=False),
    Column("endpoint", ClientString(64), nullable=False),
    Column("session_id", ClientString(256), nullable=True),
    Column("decision", ClientString(128), nullable=True),
    Column("signals", JSON, nullable=False),
    Column("requested_model", ClientString(256), nullable=False),
    Column("selected_model", ClientString(128), nullable=True),
    Column("stream", Boolean, nullable=False),
    Column("upstream_status", BoundedInteger, nullable=True),
    Column("lifecycle_state", ClientString(16), nullable=False),
    Column("terminal_reason", ClientString(32), nullable=True),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("completed_at", UTCDateTime(), nullable=True),
    Column("routing_ms", Float, nullable=True),
    Column("ttfb_ms", Float, nullable=True),
    Column("total_ms", Float, nullable=True),
    Column("prompt_tokens", BoundedInteger, nullable=True),
    Column("completion_tokens", BoundedInteger, nullable=True),
    Column("total_tokens", BoundedInteger, nullable=True),
    Column("cost", Float, nullable=True),
    Column("currency", ClientString(8), nullable=True),
    Column("error", ClientText, nullable=True),
    Column("request_body", ClientText, nullable=True),
    Column("request_body_truncated", Boolean, nullable=False),
    Column("response_body", ClientText, nullable=True),
    Column("response_body_truncated", Boolean, nullable=False),
    # The captured prompt (user messages' text), searched by GET /api/replay?q=. The full-text
    # objects over it are dialect-specific: see migration 0003 and FULL_TEXT_OBJECTS.
    Column("prompt_text", ClientText, nullable=True),
    # The response a /v1/responses request created (stored or not).
    Column("response_id", ClientString(40), nullable=True),
    # The API key the request was made with (None with auth off).
    Column("key_id", ClientString(40), nullable=True),
    Index("ix_router_replay_tenant_id_id", "tenant_id", "id"),
    # Each list filter's index is in id order (a list over every tenant walks it), with the
    # tenant after the id (a list of one tenant checks it without reading other rows).
    Index("ix_router_replay_decision_id_tenant_id", "decision", "id", "tenant_id"),
    Index("ix_router_replay_selected_model_id_tenant_id", "selected_model", "id", "tenant_id"),
    Index("ix_router_replay_lifecycle_state_id_tenant_id", "lifecycle_state", "id", "tenant_id"),
    Index("ix_router_replay_session_id_id_tenant_id", "session_id", "id", "tenant_id"),
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
unmanaged("router_replay_fts", "ix_router_replay_prompt_fts")
