"""The tables of the ``conversations`` and ``conversation_items`` surfaces."""

from __future__ import annotations

from sqlalchemy import JSON, Column, ForeignKey, Index, Table

from routekeeper.storage.schema import metadata
from routekeeper.storage.types import BoundedInteger, ClientString, UTCDateTime

conversations = Table(
    "conversations",
    metadata,
    Column("id", ClientString(40), primary_key=True),
    Column("tenant_id", ClientString(64), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("metadata", JSON, nullable=False),
    Column("next_position", BoundedInteger, nullable=False),
    Index("ix_conversations_tenant_id_id", "tenant_id", "id"),
    Index("ix_conversations_created_at", "created_at"),
)

conversation_items = Table(
    "conversation_items",
    metadata,
    Column("id", ClientString(40), primary_key=True),
    Column(
        "conversation_id",
        ClientString(40),
        ForeignKey("conversations.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("tenant_id", ClientString(64), nullable=False),
    Column("position", BoundedInteger, nullable=False),
    Column("response_id", ClientString(40), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("data", JSON, nullable=False),
    # Lists page by position within a conversation; a position is taken once.
    Index(
        "ix_conversation_items_conversation_id_position",
        "conversation_id",
        "position",
        unique=True,
    ),
)
