"""Conversations (OpenAI's Conversations API): a conversation and its items, in order. Items
come from ``POST /v1/conversations[/{id}/items]`` and from the turns of ``POST /v1/responses``
with ``conversation``: a finished turn appends its input and output items together, in the
transaction that finishes its response."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from routekeeper.contract.classes import StateClass
from routekeeper.contract.surface import Owner, Surface, WriteMode, Writes


@dataclass(frozen=True)
class ConversationRecord:
    """A conversation. ``next_position`` is the position its next item takes: every append
    (items sent by a client, a finished turn) reads and advances it under the row's lock,
    in the transaction that inserts the items."""

    id: str
    created_at: datetime
    metadata: dict[str, Any]
    next_position: int = 0
    tenant_id: str = "default"


@dataclass(frozen=True)
class ConversationItemRecord:
    """One item of a conversation, as OpenAI shows it (``data``, its ``id`` included);
    ``position`` orders the conversation. ``response_id`` is the turn that appended it
    (None for items a client sent)."""

    id: str
    conversation_id: str
    position: int
    created_at: datetime
    data: dict[str, Any]
    response_id: str | None = None
    tenant_id: str = "default"


@dataclass(frozen=True)
class ConversationFilters:
    """What ``GET /api/conversations`` selects; every filter is backed by an index.
    ``tenant_id`` None: every tenant (an admin key's view)."""

    tenant_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


CONVERSATIONS = Surface(
    name="conversations",
    owner=Owner.ROUTER,
    state_class=StateClass.SHARED_DURABLE_WORKFLOW_STATE,
    stores=(
        "One row per conversation: its metadata and the counter that gives its next item "
        "a position."
    ),
    restart_expectation=(
        "Every conversation whose id a client received is there after SIGTERM and SIGKILL, "
        "with its metadata as last acknowledged; a deleted one stays deleted."
    ),
    recovery=(
        "Nothing to repair: every write (create, update, delete, an append of items or of "
        "a finished turn) is one transaction."
    ),
    # A finished turn is appended in the transaction that finishes its response.
    colocated_with="responses",
    id_prefix="conv",
    tenant_scoped=True,
    writes=Writes(WriteMode.ACKNOWLEDGED),
    retention=None,
)
"""Kept until deleted: a conversation has no age limit (OpenAI keeps them too)."""

CONVERSATION_ITEMS = Surface(
    name="conversation_items",
    owner=Owner.ROUTER,
    state_class=StateClass.SHARED_DURABLE_WORKFLOW_STATE,
    stores=(
        "The items of each conversation, in order: messages a client added and the input "
        "and output items of every completed or incomplete turn, each with a stable id."
    ),
    restart_expectation=(
        "Every item a client was told about (an items answer, a finished turn's response) "
        "is there after SIGTERM and SIGKILL, in its place; a conversation never holds part "
        "of a turn: a turn's input and output are appended together when it finishes."
    ),
    recovery=(
        "Nothing to repair: items are written in one transaction with what they belong to "
        "(their conversation's counter, and a turn's response finish)."
    ),
    colocated_with="conversations",
    id_prefix="msg",
    tenant_scoped=True,
    writes=Writes(WriteMode.ACKNOWLEDGED),
    retention=None,
)
"""Items go with their conversation: deleting a conversation deletes its items (a foreign key
with ON DELETE CASCADE)."""
