"""Replica lifecycle: phases, the allowed transitions between them, and the typed events."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class ReplicaPhase(enum.StrEnum):
    STARTING = "starting"
    MIGRATING = "migrating"
    RECOVERING = "recovering"
    READY = "ready"
    DRAINING = "draining"
    STOPPED = "stopped"
    FAILED = "failed"
    """Startup or shutdown failed and the process exited on its own (with an error)."""

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_PHASES


TERMINAL_PHASES = frozenset({ReplicaPhase.STOPPED, ReplicaPhase.FAILED})

_P = ReplicaPhase
ALLOWED_TRANSITIONS: dict[ReplicaPhase, frozenset[ReplicaPhase]] = {
    _P.STARTING: frozenset({_P.MIGRATING, _P.DRAINING, _P.FAILED}),
    _P.MIGRATING: frozenset({_P.RECOVERING, _P.DRAINING, _P.FAILED}),
    _P.RECOVERING: frozenset({_P.READY, _P.DRAINING, _P.FAILED}),
    _P.READY: frozenset({_P.DRAINING, _P.FAILED}),
    _P.DRAINING: frozenset({_P.STOPPED, _P.FAILED}),
    _P.STOPPED: frozenset(),
    _P.FAILED: frozenset(),
}


def transition_allowed(from_phase: ReplicaPhase, to_phase: ReplicaPhase) -> bool:
    return to_phase in ALLOWED_TRANSITIONS[from_phase]


class RuntimeEventKind(enum.StrEnum):
    """Kinds of rows in the ``runtime_events`` surface."""

    REPLICA_PHASE_CHANGED = "replica.phase_changed"


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
