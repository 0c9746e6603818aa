"""Router replay: one audit record per ``/v1`` request."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from routekeeper.contract.classes import StateClass
from routekeeper.contract.lifecycle import Lifecycle
from routekeeper.contract.surface import Owner, Retention, Surface, WriteMode, Writes

PASS_THROUGH = "(pass-through)"
"""The decision label of a request that named a configured model (no routing): the replay
aggregate's ``by_decision`` key, the CLI's tables and ``/metrics``' ``decision`` label."""


class LifecycleState(enum.StrEnum):
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    ABORTED = "aborted"


REPLAY_LIFECYCLE = Lifecycle.of(
    "replay record",
    LifecycleState,
    LifecycleState.IN_PROGRESS,
    {
        LifecycleState.IN_PROGRESS: {
            LifecycleState.COMPLETED,
            LifecycleState.FAILED,
            LifecycleState.ABORTED,
        },
        LifecycleState.COMPLETED: (),
        LifecycleState.FAILED: (),
        LifecycleState.ABORTED: (),
    },
)
"""A record is written ``in_progress`` and moves once, to how the request ended (or to
``aborted`` by recovery when its replica died)."""


class TerminalReason(enum.StrEnum):
    RESPONSE_COMPLETE = "response_complete"
    UPSTREAM_ERROR = "upstream_error"
    UPSTREAM_TIMEOUT = "upstream_timeout"
    CLIENT_CANCELED = "client_canceled"
    SERVER_SHUTDOWN = "server_shutdown"
    """SIGTERM's shutdown budget ended the request before its upstream did."""
    PROCESS_RESTART = "process_restart"
    INTERNAL_ERROR = "internal_error"
    """routekeeper itself failed while serving the request (see the server log)."""


class DropReason(enum.StrEnum):
    """Why a replay record was not stored (counted, never silent)."""

    QUEUE_FULL = "queue_full"
    DB_UNAVAILABLE = "db_unavailable"
    VALUE_REFUSED = "value_refused"
    """The database refused one of the record's values: the record was isolated from its
    batch and the others were committed. A refused new record is not stored; a refused
    finish is stored without its details (state, reason and times only)."""


@dataclass(frozen=True)
class ReplayFilters:
    """What a replay list or aggregate selects (``GET /api/replay``); the store backs every
    filter with an index. ``tenant_id`` None: every tenant (an admin key's view)."""

    tenant_id: str | None = None
    decision: str | None = None
    model: str | None = None
    lifecycle_state: LifecycleState | None = None
    session_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    q: str | None = None


@dataclass(frozen=True)
class ReplayRecord:
    """A request's replay record; ``None`` fields are not known (yet)."""

    id: str
    request_id: str
    replica_id: str
    endpoint: str
    started_at: datetime
    requested_model: str
    selected_model: str | None
    decision: str | None
    stream: bool
    lifecycle_state: LifecycleState = LifecycleState.IN_PROGRESS
    tenant_id: str = "default"
    session_id: str | None = None
    signals: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Matched signals per family: ``{"keywords": [{"name": "code", "score": 1.0}]}``."""
    terminal_reason: TerminalReason | None = None
    upstream_status: int | None = None
    completed_at: datetime | None = None
    routing_ms: float | None = None
    ttfb_ms: float | None = None
    total_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    cost: float | None = None
    currency: str | None = None
    error: str | None = None
    request_body: str | None = None
    request_body_truncated: bool = False
    prompt_text: str | None = None
    """The captured user messages' text (what ``q`` searches); only with request capture."""
    response_body: str | None = None
    response_body_truncated: bool = False
    response_id: str | None = None
    """The response a ``/v1/responses`` request created (stored or not)."""
    key_id: str | None = None
    """The API key the request was made with (None with ``auth.mode: none``)."""


ROUTER_REPLAY = Surface(
    name="router_replay",
    owner=Owner.ROUTER,
    state_class=StateClass.AUDIT_ANALYTICS_TELEMETRY,
    stores=(
        "One record per routed or passed-through chat completion: ids, replica, session, "
        "decision, matched signals with scores, requested and selected model, streaming, "
        "upstream status, lifecycle_state and terminal_reason, durations, token usage, cost."
    ),
    restart_expectation=(
        "Every request that finished is there after SIGTERM. After SIGKILL, every answer "
        "sent with `x-routekeeper-replay-durable: true` (replay.durability acknowledged, the "
        "default) is there and final; in `batch` mode what finished within "
        "replay.flush_interval_ms of the kill may be lost. A request in flight at a crash is "
        "`aborted` / `process_restart`. Drops (queue full, database down, a refused value) "
        "are counted, never silent."
    ),
    recovery=(
        "Records left `in_progress` by a replica that is no longer live become `aborted` with "
        "terminal_reason `process_restart` (at start, and when a sweep records a crash)."
    ),
    id_prefix="rpl",
    tenant_scoped=True,
    recovery_step=True,
    writes=Writes(WriteMode.ACKNOWLEDGED, setting="replay.durability"),
    retention=Retention(max_age_days="replay.retention_days", max_count="replay.max_records"),
    lifecycle=REPLAY_LIFECYCLE,
)
