"""The tables of the ``api_keys`` and ``audit_events`` surfaces."""

from __future__ import annotations

from sqlalchemy import JSON, Column, Index, Table

from routekeeper.storage.schema import metadata
from routekeeper.storage.types import BoundedInteger, ClientString, UTCDateTime

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", ClientString(40), primary_key=True),
    Column("tenant_id", ClientString(64), nullable=False),
    Column("label", ClientString(200), nullable=False),
    Column("role", ClientString(16), nullable=False),
    Column("secret_hash", ClientString(64), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=True),
    Column("revoked_at", UTCDateTime(), nullable=True),
    Column("last_used_at", UTCDateTime(), nullable=True),
    Column("requests_per_minute", BoundedInteger, nullable=True),
    # Every request with a key looks it up by the hash of its secret.
    Index("ix_api_keys_secret_hash", "secret_hash", unique=True),
    Index("ix_api_keys_tenant_id_id", "tenant_id", "id"),
    # The expiry sweep looks only at keys that have an expiry.
    Index("ix_api_keys_expires_at", "expires_at"),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column("id", ClientString(40), primary_key=True),
    Column("kind", ClientString(40), nullable=False),
    Column("occurred_at", UTCDateTime(), nullable=False),
    Column("tenant_id", ClientString(64), nullable=False),
    Column("key_id", ClientString(40), nullable=True),
    Column("actor_key_id", ClientString(40), nullable=True),
    Column("data", JSON, nullable=False),
    Index("ix_audit_events_kind_id", "kind", "id"),
    Index("ix_audit_events_key_id_id", "key_id", "id"),
    Index("ix_audit_events_tenant_id_id", "tenant_id", "id"),
    Index("ix_audit_events_occurred_at", "occurred_at"),
)
