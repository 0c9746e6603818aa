"""Tables of the ``runtime_status`` (replicas) and ``runtime_events`` surfaces."""

from __future__ import annotations

from sqlalchemy import JSON, Column, Index, Table

from routekeeper.storage.schema import BigIntId, metadata
from routekeeper.storage.types import BoundedInteger, ClientString, ClientText, UTCDateTime

runtime_replicas = Table(
    "runtime_replicas",
    metadata,
    Column("id", ClientString(40), primary_key=True),
    Column("phase", ClientString(20), nullable=False),
    Column("host", ClientString(255), nullable=False),
    Column("pid", BoundedInteger, nullable=False),
    Column("listen", ClientString(255), nullable=True),
    Column("version", ClientString(40), nullable=False),
    Column("detail", ClientText, nullable=True),
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
    Column("replica_id", ClientString(40), nullable=False),
    Column("kind", ClientString(60), nullable=False),
    Column("from_phase", ClientString(20), nullable=True),
    Column("to_phase", ClientString(20), nullable=True),
    Column("data", JSON, nullable=False),
    Column("occurred_at", UTCDateTime(), nullable=False),
    Index("ix_runtime_events_replica_id_id", "replica_id", "id"),
    Index("ix_runtime_events_occurred_at", "occurred_at"),
)
