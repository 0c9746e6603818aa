"""Replica lifecycle: phases, the allowed transitions between them, and the typed events."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from routekeeper.contract.classes import StateClass
from routekeeper.contract.lifecycle import Lifecycle
from routekeeper.contract.surface import Owner, Retention, Surface


class ReplicaPhase(enum.StrEnum):
    STARTING = "starting"
    MIGRATING = "migrating"
    RECOVERING = "recovering"
    READY = "ready"
    DRAINING = "draining"
    STOPPED = "stopped"
    FAILED = "failed"
    """Startup or shutdown failed and the process exited on its own (with an error)."""
    CRASHED = "crashed"
    """The process died without saying so; another replica noticed (lock free or heartbeat
    stale) and recorded it."""

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_PHASES


_P = ReplicaPhase
# A replica moves itself along these; only another replica's sweep moves it to CRASHED.
REPLICA_LIFECYCLE = Lifecycle.of(
    "replica",
    ReplicaPhase,
    ReplicaPhase.STARTING,
    {
        _P.STARTING: {_P.MIGRATING, _P.DRAINING, _P.FAILED, _P.CRASHED},
        _P.MIGRATING: {_P.RECOVERING, _P.DRAINING, _P.FAILED, _P.CRASHED},
        _P.RECOVERING: {_P.READY, _P.DRAINING, _P.FAILED, _P.CRASHED},
        _P.READY: {_P.DRAINING, _P.FAILED, _P.CRASHED},
        _P.DRAINING: {_P.STOPPED, _P.FAILED, _P.CRASHED},
        _P.STOPPED: (),
        _P.FAILED: (),
        _P.CRASHED: (),
    },
)
ALLOWED_TRANSITIONS = REPLICA_LIFECYCLE.moves
TERMINAL_PHASES = REPLICA_LIFECYCLE.terminal
LIVE_PHASES = REPLICA_LIFECYCLE.live


def transition_allowed(from_phase: ReplicaPhase, to_phase: ReplicaPhase) -> bool:
    return REPLICA_LIFECYCLE.allows(from_phase, to_phase)


class RuntimeEventKind(enum.StrEnum):
    """Kinds of rows in the ``runtime_events`` surface."""

    REPLICA_PHASE_CHANGED = "replica.phase_changed"
    """A replica moved itself from one phase to another."""
    REPLICA_CRASHED = "replica.crashed"
    """Another replica found this one dead; data: last_heartbeat_at, detected_by, reason."""
    RECOVERY_COMPLETED = "recovery.completed"
    """A surface's recovery step ran at startup; data: surface, counts."""


@dataclass(frozen=True)
class ReplicaRecord:
    """One replica (a ``serve`` process) as stored in ``runtime_status``."""

    id: str
    phase: ReplicaPhase
    host: str
    pid: int
    listen: str | None
    version: str
    started_at: datetime
    heartbeat_at: datetime
    updated_at: datetime
    stopped_at: datetime | None = None
    detail: str | None = None


@dataclass(frozen=True)
class PhaseChange:
    """A transition that happened at ``occurred_at`` (kept in memory until it is stored)."""

    from_phase: ReplicaPhase | None
    to_phase: ReplicaPhase
    occurred_at: datetime
    detail: str | None = None


class CrashReason(enum.StrEnum):
    LOCK_FREE = "lock_free"
    """Its liveness lock is free: the process holding it is gone."""
    HEARTBEAT_STALE = "heartbeat_stale"
    """Its heartbeat is older than runtime.stale_after_seconds."""


@dataclass(frozen=True)
class RuntimeEvent:
    """One row of ``runtime_events``; ``id`` grows with every append."""

    id: int
    replica_id: str
    kind: RuntimeEventKind
    from_phase: ReplicaPhase | None
    to_phase: ReplicaPhase | None
    data: dict[str, Any] = field(default_factory=dict)
    occurred_at: datetime | None = None


RUNTIME_STATUS = Surface(
    name="runtime_status",
    owner=Owner.ROUTER,
    state_class=StateClass.SHARED_DURABLE_WORKFLOW_STATE,
    stores=(
        "One row per replica (each `serve` process): id, phase, host, pid, listen address, "
        "version, started/heartbeat/stopped times."
    ),
    restart_expectation=(
        "Every replica that ever started is still listed (until retention) with its last "
        "phase: `stopped` after SIGTERM, `crashed` after SIGKILL or a hang once any replica "
        "has swept."
    ),
    recovery=(
        "Crash sweep (at start, before ready, and every heartbeat): a replica still in a live "
        "phase whose flock is free, or whose heartbeat is older than "
        "`runtime.stale_after_seconds` as judged by a replica itself settled that long (a free "
        "PostgreSQL advisory lock alone is no proof: a database outage frees every one), "
        "becomes `crashed` with a `replica.crashed` event naming its last heartbeat and the "
        "detector, recorded exactly once."
    ),
    id_prefix="rep",
    recovery_step=True,
    retention=Retention(
        max_age_days="runtime.replica_retention_days",
        applies_to="replicas in a terminal phase, by the time they stopped",
    ),
    lifecycle=REPLICA_LIFECYCLE,
)

RUNTIME_EVENTS = Surface(
    name="runtime_events",
    owner=Owner.ROUTER,
    state_class=StateClass.AUDIT_ANALYTICS_TELEMETRY,
    stores=(
        "Typed, append-only events: `replica.phase_changed` and `replica.crashed` (each in the "
        "same transaction as the runtime_status row change it describes) and "
        "`recovery.completed` (per surface, with counts)."
    ),
    restart_expectation="Every committed event is kept, in order, until retention removes it.",
    recovery="Nothing to repair: events are only ever appended in committed transactions.",
    colocated_with="runtime_status",
    retention=Retention(max_age_days="runtime.event_retention_days"),
)
