"""The ``runtime_status`` and ``runtime_events`` surfaces: replica rows and their typed events.

Every phase change updates the replica row and appends its ``replica.phase_changed`` event in
one transaction (the two surfaces are colocated by contract)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update

from routekeeper.contract.pages import Page, SortOrder
from routekeeper.contract.runtime import (
    LIVE_PHASES,
    REPLICA_LIFECYCLE,
    TERMINAL_PHASES,
    CrashReason,
    PhaseChange,
    ReplicaPhase,
    ReplicaRecord,
    RuntimeEvent,
    RuntimeEventKind,
)
from routekeeper.storage.dialect import Dialect
from routekeeper.storage.records import from_row, to_row
from routekeeper.storage.recovery import RecoveryStep
from routekeeper.storage.schema.runtime import runtime_events, runtime_replicas
from routekeeper.storage.surface_store import RetentionRule, SurfaceStore
from routekeeper.storage.types import utcnow


def _replica(row: Any) -> ReplicaRecord:
    return from_row(ReplicaRecord, row)


def _event(row: Any) -> RuntimeEvent:
    return from_row(RuntimeEvent, row)


def _event_row(
    replica_id: str,
    kind: RuntimeEventKind,
    *,
    from_phase: str | None = None,
    to_phase: str | None = None,
    data: dict[str, Any] | None = None,
    at: datetime,
) -> dict[str, Any]:
    return {
        "replica_id": replica_id,
        "kind": kind.value,
        "from_phase": from_phase,
        "to_phase": to_phase,
        "data": data or {},
        "occurred_at": at,
    }


def _phase_event(replica_id: str, change: PhaseChange) -> dict[str, Any]:
    return _event_row(
        replica_id,
        RuntimeEventKind.REPLICA_PHASE_CHANGED,
        from_phase=change.from_phase.value if change.from_phase else None,
        to_phase=change.to_phase.value,
        data={"detail": change.detail} if change.detail else {},
        at=change.occurred_at,
    )


@dataclass(frozen=True)
class ReplicaFilters:
    phases: Sequence[ReplicaPhase] | None = None

    def apply(self, query: Any, dialect: Dialect) -> Any:
        if self.phases:
            query = query.where(runtime_replicas.c.phase.in_([p.value for p in self.phases]))
        return query


@dataclass(frozen=True)
class RuntimeEventFilters:
    replica_id: str | None = None
    kind: RuntimeEventKind | None = None

    def apply(self, query: Any, dialect: Dialect) -> Any:
        if self.replica_id is not None:
            query = query.where(runtime_events.c.replica_id == self.replica_id)
        if self.kind is not None:
            query = query.where(runtime_events.c.kind == self.kind.value)
        return query


class RuntimeStore(SurfaceStore):
    """Replica rows and runtime events on one backend."""

    tables = {"runtime_status": (runtime_replicas,), "runtime_events": (runtime_events,)}
    records = {runtime_replicas.name: ReplicaRecord, runtime_events.name: RuntimeEvent}
    lifecycle_columns = {"runtime_status": "phase"}
    retention = {
        "runtime_status": RetentionRule(
            runtime_replicas,
            age_column="stopped_at",
            state_column="phase",
            states=frozenset(p.value for p in TERMINAL_PHASES),
        ),
        "runtime_events": RetentionRule(runtime_events, age_column="occurred_at"),
    }

    def recovery_steps(self) -> Sequence[RecoveryStep]:
        from routekeeper.storage.runtime_recovery import SWEEP

        return (SWEEP,)

    async def register(self, replica: ReplicaRecord, history: Sequence[PhaseChange]) -> None:
        """Insert a new replica row at its current phase together with the events of the
        phase changes it went through before the schema could store them."""
        async with self.db.write() as conn:
            await conn.execute(insert(runtime_replicas).values(**to_row(replica)))
            if history:
                await conn.execute(
                    insert(runtime_events), [_phase_event(replica.id, c) for c in history]
                )

    async def transition(
        self,
        replica_id: str,
        to_phase: ReplicaPhase,
        *,
        detail: str | None = None,
        at: datetime | None = None,
    ) -> ReplicaRecord:
        """Move a replica to ``to_phase`` and append the event, atomically.

        Raises NotFound for an unknown replica and InvalidTransition for a change the
        lifecycle table does not allow."""
        now = at or utcnow()
        values: dict[str, Any] = {"updated_at": now}
        if detail is not None:
            values["detail"] = detail
        if to_phase in TERMINAL_PHASES:
            values["stopped_at"] = now
        async with self.db.write() as conn:
            _, row = await self._transition(
                conn,
                runtime_replicas,
                replica_id,
                REPLICA_LIFECYCLE,
                to_phase,
                state_column="phase",
                values=values,
                event=lambda current: (
                    runtime_events,
                    _phase_event(replica_id, PhaseChange(current, to_phase, now, detail)),
                ),
                what="replica",
            )
        return _replica(row)

    async def heartbeat(self, replica_id: str, *, at: datetime | None = None) -> bool:
        """Store the heartbeat; False when the replica is no longer live (another replica
        declared it crashed, or it never registered)."""
        async with self.db.write() as conn:
            result = await conn.execute(
                update(runtime_replicas)
                .where(runtime_replicas.c.id == replica_id)
                .where(runtime_replicas.c.phase.in_([p.value for p in LIVE_PHASES]))
                .values(heartbeat_at=at or utcnow())
            )
        return result.rowcount > 0

    async def mark_crashed(
        self,
        replica_id: str,
        *,
        reason: CrashReason,
        detected_by: str | None,
        at: datetime | None = None,
        last_heartbeat_at: datetime | None = None,
    ) -> bool:
        """Record that a live replica died: phase ``crashed`` and a ``replica.crashed`` event
        naming its last heartbeat and the detector, in one transaction. Returns False (and
        writes nothing) when the replica is already in a terminal phase, so concurrent sweeps
        record a crash exactly once, or when its heartbeat is no longer
        ``last_heartbeat_at`` (the one it was judged by: it beat since)."""
        now = at or utcnow()
        async with self.db.write() as conn:
            query = self.db.dialect.for_update(
                select(runtime_replicas).where(runtime_replicas.c.id == replica_id)
            )
            row = (await conn.execute(query)).one_or_none()
            if row is None or ReplicaPhase(row.phase) in TERMINAL_PHASES:
                return False
            if last_heartbeat_at is not None and row.heartbeat_at != last_heartbeat_at:
                return False
            detail = f"declared crashed by {detected_by or 'recovery'}: {reason.value}"
            await self._transition(
                conn,
                runtime_replicas,
                replica_id,
                REPLICA_LIFECYCLE,
                ReplicaPhase.CRASHED,
                state_column="phase",
                values={"updated_at": now, "stopped_at": now, "detail": detail},
                event=lambda current: (
                    runtime_events,
                    _event_row(
                        replica_id,
                        RuntimeEventKind.REPLICA_CRASHED,
                        from_phase=current.value,
                        to_phase=ReplicaPhase.CRASHED.value,
                        data={
                            "last_heartbeat_at": row.heartbeat_at.isoformat(),
                            "detected_by": detected_by,
                            "reason": reason.value,
                            "last_phase": current.value,
                        },
                        at=now,
                    ),
                ),
                what="replica",
            )
        return True

    async def append_event(
        self,
        replica_id: str,
        kind: RuntimeEventKind,
        data: dict[str, Any],
        *,
        at: datetime | None = None,
    ) -> None:
        """Append an event that changes no replica row (e.g. ``recovery.completed``)."""
        async with self.db.write() as conn:
            await conn.execute(
                insert(runtime_events).values(
                    **_event_row(replica_id, kind, data=data, at=at or utcnow())
                )
            )

    async def live_replicas(self, *, upkeep: bool = False) -> list[ReplicaRecord]:
        """Every replica not in a terminal phase (an index on phase keeps this small).
        ``upkeep``: read on the upkeep lane (the crash sweep), never behind client reads."""
        out: list[ReplicaRecord] = []
        after: str | None = None
        while True:
            page = await self.list_replicas(
                limit=100,
                order=SortOrder.ASC,
                after=after,
                phases=sorted(LIVE_PHASES),
                upkeep=upkeep,
            )
            out.extend(page.data)
            if not page.has_more:
                return out
            after = str(page.last_id)

    async def get(self, replica_id: str, *, upkeep: bool = False) -> ReplicaRecord:
        return await self._one(runtime_replicas, replica_id, _replica, "replica", upkeep=upkeep)

    async def list_replicas(
        self,
        *,
        limit: int = 20,
        order: SortOrder = SortOrder.DESC,
        after: str | None = None,
        before: str | None = None,
        phases: Sequence[ReplicaPhase] | None = None,
        upkeep: bool = False,
    ) -> Page[ReplicaRecord]:
        """Replicas by id (ids are time-ordered, so DESC is newest first)."""
        query = ReplicaFilters(phases).apply(select(runtime_replicas), self.db.dialect)
        return await self._page(
            query,
            runtime_replicas.c.id,
            _replica,
            limit=limit,
            order=order,
            after=after,
            before=before,
            upkeep=upkeep,
        )

    async def list_events(
        self,
        *,
        limit: int = 20,
        order: SortOrder = SortOrder.DESC,
        after: int | None = None,
        before: int | None = None,
        replica_id: str | None = None,
        kind: RuntimeEventKind | None = None,
    ) -> Page[RuntimeEvent]:
        filters = RuntimeEventFilters(replica_id, kind)
        return await self._page(
            filters.apply(select(runtime_events), self.db.dialect),
            runtime_events.c.id,
            _event,
            limit=limit,
            order=order,
            after=after,
            before=before,
        )
