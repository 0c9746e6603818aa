"""The tables of the ``responses`` and ``response_items`` surfaces."""

from __future__ import annotations

from sqlalchemy import JSON, Column, ForeignKey, Index, Table, text

from routekeeper.storage.schema import metadata
from routekeeper.storage.types import BoundedInteger, ClientString, UTCDateTime

responses = Table(
    "responses",
    metadata,
    Column("id", ClientString(40), primary_key=True),
    Column("tenant_id", ClientString(64), nullable=False),
    Column("replica_id", ClientString(40), nullable=False),
    Column("status", ClientString(16), nullable=False),
    Column("model", ClientString(256), nullable=False),
    Column("selected_model", ClientString(128), nullable=True),
    Column("previous_response_id", ClientString(40), nullable=True),
    Column("replay_id", ClientString(40), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("completed_at", UTCDateTime(), nullable=True),
    Column("request", JSON, nullable=False),
    Column("usage", JSON, nullable=True),
    Column("error", JSON, nullable=True),
    Column("incomplete_details", JSON, nullable=True),
    Column("conversation_id", ClientString(40), nullable=True),
    Index("ix_responses_tenant_id_id", "tenant_id", "id"),
    Index("ix_responses_model_id", "model", "id"),
    Index("ix_responses_status_id", "status", "id"),
    Index("ix_responses_created_at", "created_at"),
    Index("ix_responses_conversation_id_id", "conversation_id", "id"),
    # Recovery finds what a dead replica left in flight without scanning finished responses.
    Index(
        "ix_responses_in_progress",
        "replica_id",
        postgresql_where=text("status = 'in_progress'"),
        sqlite_where=text("status = 'in_progress'"),
    ),
)

response_items = Table(
    "response_items",
    metadata,
    Column("id", ClientString(40), primary_key=True),
    Column(
        "response_id",
        ClientString(40),
        ForeignKey("responses.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("tenant_id", ClientString(64), nullable=False),
    Column("position", BoundedInteger, nullable=False),
    Column("kind", ClientString(8), nullable=False),
    Column("data", JSON, nullable=False),
    # input_items pages by id within a response; a turn's context reads them by position.
    Index("ix_response_items_response_id_id", "response_id", "id"),
    Index("ix_response_items_response_id_position", "response_id", "position"),
)
