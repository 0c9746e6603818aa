"""Responses (OpenAI's Responses API): one stored response per ``POST /v1/responses`` with
``store: true``, and its items (the input it was sent, the output it produced)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from routekeeper.contract.classes import StateClass
from routekeeper.contract.lifecycle import Lifecycle
from routekeeper.contract.surface import Owner, Retention, Surface, WriteMode, Writes


class ResponseStatus(enum.StrEnum):
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    INCOMPLETE = "incomplete"
    CANCELLED = "cancelled"


RESPONSE_LIFECYCLE = Lifecycle.of(
    "response",
    ResponseStatus,
    ResponseStatus.IN_PROGRESS,
    {
        ResponseStatus.IN_PROGRESS: {
            ResponseStatus.COMPLETED,
            ResponseStatus.FAILED,
            ResponseStatus.INCOMPLETE,
            ResponseStatus.CANCELLED,
        },
        ResponseStatus.COMPLETED: (),
        ResponseStatus.FAILED: (),
        ResponseStatus.INCOMPLETE: (),
        ResponseStatus.CANCELLED: (),
    },
)
"""A response is stored ``in_progress`` when it starts and moves once: ``completed``,
``failed`` (with ``error``), ``incomplete`` (with ``incomplete_details``, e.g. the length
limit) or ``cancelled`` (the client left its stream; the partial output is kept). Recovery
moves the ones a dead replica left ``in_progress`` to ``failed``."""

RESTART_ERROR = {
    "code": "server_error",
    "message": "the server restarted while this response was in progress; create it again",
}
"""The ``error`` of a response that recovery finished after its replica died."""


class ItemKind(enum.StrEnum):
    INPUT = "input"
    OUTPUT = "output"


@dataclass(frozen=True)
class ResponseRecord:
    """A stored response. ``request`` holds the create fields it echoes (instructions,
    metadata, sampling, text, reasoning, forwarded fields); the output is its items."""

    id: str
    replica_id: str
    status: ResponseStatus
    model: str
    created_at: datetime
    request: dict[str, Any] = field(default_factory=dict)
    tenant_id: str = "default"
    selected_model: str | None = None
    previous_response_id: str | None = None
    replay_id: str | None = None
    completed_at: datetime | None = None
    usage: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    incomplete_details: dict[str, Any] | None = None
    conversation_id: str | None = None


@dataclass(frozen=True)
class ResponseItemRecord:
    """One item of a response, as OpenAI shows it (``data``, its ``id`` included); ``position``
    orders a response's items (its input first, then its output)."""

    id: str
    response_id: str
    position: int
    kind: ItemKind
    data: dict[str, Any]
    tenant_id: str = "default"


@dataclass(frozen=True)
class ResponseFilters:
    """What ``GET /api/responses`` selects; every filter is backed by an index.
    ``tenant_id`` None: every tenant (an admin key's view)."""

    tenant_id: str | None = None
    model: str | None = None
    status: ResponseStatus | None = None
    since: datetime | None = None
    until: datetime | None = None
    conversation_id: str | None = None


RESPONSES = Surface(
    name="responses",
    owner=Owner.ROUTER,
    state_class=StateClass.SHARED_DURABLE_WORKFLOW_STATE,
    stores=(
        "One row per response created with `store: true`: status (in_progress, completed, "
        "failed, incomplete, cancelled), the model asked for and the one chosen, the previous "
        "response it continues, the create fields it echoes, usage, error or incomplete "
        "details, and its replay record's id."
    ),
    restart_expectation=(
        "Every response whose id a client received (the create answer, or the "
        "`response.created` event of a stream, both sent after its commit) is there after "
        "SIGTERM and SIGKILL, with every item; a finished one is unchanged. One in progress "
        "at a crash is `failed` with error code `server_error` saying the server restarted."
    ),
    recovery=(
        "Responses left `in_progress` by a replica that is no longer live become `failed` "
        "with error `server_error` (at start, and when a sweep records a crash)."
    ),
    id_prefix="resp",
    tenant_scoped=True,
    recovery_step=True,
    writes=Writes(WriteMode.ACKNOWLEDGED),
    retention=Retention(max_age_days="responses.retention_days"),
    lifecycle=RESPONSE_LIFECYCLE,
)

RESPONSE_ITEMS = Surface(
    name="response_items",
    owner=Owner.ROUTER,
    state_class=StateClass.SHARED_DURABLE_WORKFLOW_STATE,
    stores=(
        "The items of each stored response, in order: the input it was sent (messages with "
        "text and image parts, function calls and their outputs) and the output it produced "
        "(a message, the model's function calls), each with a stable id."
    ),
    restart_expectation=(
        "A response's input items are committed with it, its output items with its final "
        "status: after SIGTERM and SIGKILL a response and its items are there together. A "
        "response cancelled or failed mid-stream keeps the output it had."
    ),
    recovery="Nothing to repair: items are written in the transactions of their response.",
    colocated_with="responses",
    id_prefix="msg",
    tenant_scoped=True,
    writes=Writes(WriteMode.ACKNOWLEDGED),
    retention=None,
)
"""Items go with their response: deleting or pruning a response deletes its items (a foreign
key with ON DELETE CASCADE), so they have no retention of their own."""
