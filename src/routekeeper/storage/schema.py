"""The declared schema, one for both dialects. Migrations in ``migrations/versions`` must
produce exactly this (a test compares them on SQLite and PostgreSQL)."""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Column, Index, Integer, MetaData, String, Table, Text

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

# Which tables hold each registered surface (tests check this covers the registry exactly).
SURFACE_TABLES: dict[str, tuple[Table, ...]] = {
    "runtime_status": (runtime_replicas,),
    "runtime_events": (runtime_events,),
}
