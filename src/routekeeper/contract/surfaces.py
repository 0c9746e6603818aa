"""The registry of state surfaces: every piece of state routekeeper keeps, declared once.

Only surfaces that exist in the code are registered; ``docs/state-inventory.md`` and
``routekeeper state inventory`` are generated from this module.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from routekeeper.contract.classes import StateClass, is_durable, is_shared
from routekeeper.contract.lifecycle import Lifecycle
from routekeeper.contract.replay import REPLAY_LIFECYCLE
from routekeeper.contract.runtime import REPLICA_LIFECYCLE


class Owner(enum.StrEnum):
    ROUTER = "router"
    DASHBOARD = "dashboard"


class WriteMode(enum.StrEnum):
    ACKNOWLEDGED = "acknowledged"
    """A client is told about a write (2xx, an id, a terminal event) only after its commit."""
    BATCH = "batch"
    """Written by a batched writer after the answer; what cannot be written is counted."""


@dataclass(frozen=True)
class Writes:
    """How the surface's writes reach the database. ``setting`` (a dotted settings path)
    lets the operator choose the mode; ``mode`` is the default."""

    mode: WriteMode = WriteMode.ACKNOWLEDGED
    setting: str | None = None


@dataclass(frozen=True)
class Retention:
    """Which settings bound the surface's rows (dotted settings paths): an age in days, a
    count of the newest rows kept, or both. ``applies_to`` says which rows may go."""

    max_age_days: str | None = None
    max_count: str | None = None
    applies_to: str = "every row"

    def settings(self) -> tuple[str, ...]:
        return tuple(s for s in (self.max_age_days, self.max_count) if s)


@dataclass(frozen=True)
class Surface:
    """One declared piece of state.

    ``restart_expectation`` says what a user sees after the process restarts (or is killed);
    ``recovery`` says what startup does about state a crash left behind.
    """

    name: str
    owner: Owner
    state_class: StateClass
    stores: str
    restart_expectation: str
    recovery: str
    colocated_with: str | None = None
    """Another surface this one commits in the same transaction with: both must share a backend."""
    id_prefix: str | None = None
    """The prefix of its records' ids (``rpl`` -> ``rpl_...``); None for integer ids."""
    tenant_scoped: bool = False
    """Its rows carry ``tenant_id`` and every read filters by it, in the store."""
    writes: Writes = Writes()
    retention: Retention | None = None
    """None: kept until deleted."""
    lifecycle: Lifecycle[Any] | None = None
    """The states its records move through, when they have any."""
    recovery_step: bool = False
    """Its store registers a recovery step (``recovery`` says what it does); a test checks
    the two agree."""

    @property
    def durable(self) -> bool:
        return is_durable(self.state_class)

    @property
    def shared(self) -> bool:
        return is_shared(self.state_class)


class SurfaceRegistry(Mapping[str, Surface]):
    """An immutable, ordered name -> surface mapping that refuses duplicate names."""

    def __init__(self, surfaces: tuple[Surface, ...]) -> None:
        by_name: dict[str, Surface] = {}
        for surface in surfaces:
            if surface.name in by_name:
                raise ValueError(f"surface {surface.name!r} is registered twice")
            by_name[surface.name] = surface
        self._by_name = by_name

    def __getitem__(self, name: str) -> Surface:
        return self._by_name[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)


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

SURFACES = SurfaceRegistry((RUNTIME_STATUS, RUNTIME_EVENTS, ROUTER_REPLAY))
