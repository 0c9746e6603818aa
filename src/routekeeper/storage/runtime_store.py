"""The ``runtime_status`` and ``runtime_events`` surfaces: replica rows and their typed events.

Every phase change updates the replica row and appends its ``replica.phase_changed`` event in
one transaction (the two surfaces are colocated by contract)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from routekeeper.contract.errors import InvalidTransition, NotFound
from routekeeper.contract.pages import Page, SortOrder
from routekeeper.contract.runtime import (
    LIVE_PHASES,
    TERMINAL_PHASES,
    CrashReason,
    PhaseChange,
    ReplicaPhase,
    ReplicaRecord,
    RuntimeEvent,
    RuntimeEventKind,
    transition_allowed,
)
from routekeeper.storage.database import Database
from routekeeper.storage.pagination import keyset_page
from routekeeper.storage.schema import runtime_events, runtime_replicas
from routekeeper.storage.types import utcnow


def _replica(row: Any) -> ReplicaRecord:
    return ReplicaRecord(
        id=row.id,
        phase=ReplicaPhase(row.phase),
        host=row.host,
        pid=row.pid,
        listen=row.listen,
        version=row.version,
        started_at=row.started_at,
        heartbeat_at=row.heartbeat_at,
        updated_at=row.updated_at,
        stopped_at=row.stopped_at,
        detail=row.detail,
    )


def _event(row: Any) -> RuntimeEvent:
    return RuntimeEvent(
        id=row.id,
        replica_id=row.replica_id,
        kind=RuntimeEventKind(row.kind),
        from_phase=ReplicaPhase(row.from_phase) if row.from_phase else None,
        to_phase=ReplicaPhase(row.to_phase) if row.to_phase else None,
        data=row.data or {},
        occurred_at=row.occurred_at,
    )


def _phase_event(replica_id: str, change: PhaseChange) -> dict[str, Any]:
    return {
        "replica_id": replica_id,
        "kind": RuntimeEventKind.REPLICA_PHASE_CHANGED.value,
        "from_phase": change.from_phase.value if change.from_phase else None,
        "to_phase": change.to_phase.value,
        "data": {"detail": change.detail} if change.detail else {},
        "occurred_at": change.occurred_at,
    }


class RuntimeStore:
    """Replica rows and runtime events on one backend."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def register(self, replica: ReplicaRecord, history: Sequence[PhaseChange]) -> None:
        """Insert a new replica row at its current phase together with the events of the
        phase changes it went through before the schema could store them."""
        async with self.db.write() as conn:
            await conn.execute(
                insert(runtime_replicas).values(
                    id=replica.id,
                    phase=replica.phase.value,
                    host=replica.host,
                    pid=replica.pid,
                    listen=replica.listen,
                    version=replica.version,
                    detail=replica.detail,
                    started_at=replica.started_at,
                    heartbeat_at=replica.heartbeat_at,
                    updated_at=replica.updated_at,
                    stopped_at=replica.stopped_at,
                )
            )
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
        async with self.db.write() as conn:
            current = await self._locked_phase(conn, replica_id)
            if not transition_allowed(current, to_phase):
                raise InvalidTransition(
                    f"replica {replica_id} cannot go from {current} to {to_phase}",
                    details={"replica_id": replica_id, "from": current.value, "to": to_phase.value},
                )
            values: dict[str, Any] = {"phase": to_phase.value, "updated_at": now}
            if detail is not None:
                values["detail"] = detail
            if to_phase in TERMINAL_PHASES:
                values["stopped_at"] = now
            await conn.execute(
                update(runtime_replicas).where(runtime_replicas.c.id == replica_id).values(**values)
            )
            change = PhaseChange(current, to_phase, now, detail)
            await conn.execute(insert(runtime_events).values(**_phase_event(replica_id, change)))
            row = (
                await conn.execute(
                    select(runtime_replicas).where(runtime_replicas.c.id == replica_id)
                )
            ).one()
        return _replica(row)

    async def _locked_phase(self, conn: AsyncConnection, replica_id: str) -> ReplicaPhase:
        query = select(runtime_replicas.c.phase).where(runtime_replicas.c.id == replica_id)
        if self.db.dialect == "postgresql":
            query = query.with_for_update()
        phase = (await conn.execute(query)).scalar_one_or_none()
        if phase is None:
            raise NotFound(f"no replica {replica_id}")
        return ReplicaPhase(phase)

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
            query = select(runtime_replicas).where(runtime_replicas.c.id == replica_id)
            if self.db.dialect == "postgresql":
                query = query.with_for_update()
            row = (await conn.execute(query)).one_or_none()
            if row is None or ReplicaPhase(row.phase) in TERMINAL_PHASES:
                return False
            if last_heartbeat_at is not None and row.heartbeat_at != last_heartbeat_at:
                return False
            detail = f"declared crashed by {detected_by or 'recovery'}: {reason.value}"
            await conn.execute(
                update(runtime_replicas)
                .where(runtime_replicas.c.id == replica_id)
                .values(
                    phase=ReplicaPhase.CRASHED.value, updated_at=now, stopped_at=now, detail=detail
                )
            )
            await conn.execute(
                insert(runtime_events).values(
                    replica_id=replica_id,
                    kind=RuntimeEventKind.REPLICA_CRASHED.value,
                    from_phase=row.phase,
                    to_phase=ReplicaPhase.CRASHED.value,
                    data={
                        "last_heartbeat_at": row.heartbeat_at.isoformat(),
                        "detected_by": detected_by,
                        "reason": reason.value,
                        "last_phase": row.phase,
                    },
                    occurred_at=now,
                )
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
                    replica_id=replica_id,
                    kind=kind.value,
                    from_phase=None,
                    to_phase=None,
                    data=data,
                    occurred_at=at or utcnow(),
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
        async with self.db.read(upkeep=upkeep) as conn:
            row = (
                await conn.execute(
                    select(runtime_replicas).where(runtime_replicas.c.id == replica_id)
                )
            ).one_or_none()
        if row is None:
            raise NotFound(f"no replica {replica_id}")
        return _replica(row)

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
        query = select(runtime_replicas)
        if phases:
            query = query.where(runtime_replicas.c.phase.in_([p.value for p in phases]))
        async with self.db.read(upkeep=upkeep) as conn:
            return await keyset_page(
                conn,
                query,
                runtime_replicas.c.id,
                _replica,
                lambda r: r.id,
                limit=limit,
                order=order,
                after=after,
                before=before,
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
        query = select(runtime_events)
        if replica_id is not None:
            query = query.where(runtime_events.c.replica_id == replica_id)
        if kind is not None:
            query = query.where(runtime_events.c.kind == kind.value)
        async with self.db.read() as conn:
            return await keyset_page(
                conn,
                query,
                runtime_events.c.id,
                _event,
                lambda e: e.id,
                limit=limit,
                order=order,
                after=after,
                before=before,
            )

    async def prune(
        self, *, events_before: datetime, replicas_before: datetime, batch_size: int = 1000
    ) -> tuple[int, int]:
        """Delete up to ``batch_size`` events older than ``events_before`` and finished
        replicas that stopped before ``replicas_before``; returns (events, replicas) removed.
        Call again while it removes a full batch."""
        async with self.db.write() as conn:
            old_events = (
                select(runtime_events.c.id)
                .where(runtime_events.c.occurred_at < events_before)
                .order_by(runtime_events.c.id)
                .limit(batch_size)
            )
            ids = [r[0] for r in (await conn.execute(old_events)).all()]
            if ids:
                await conn.execute(delete(runtime_events).where(runtime_events.c.id.in_(ids)))
            old_replicas = (
                select(runtime_replicas.c.id)
                .where(runtime_replicas.c.phase.in_([p.value for p in TERMINAL_PHASES]))
                .where(runtime_replicas.c.stopped_at < replicas_before)
                .limit(batch_size)
            )
            rids = [r[0] for r in (await conn.execute(old_replicas)).all()]
            if rids:
                await conn.execute(delete(runtime_replicas).where(runtime_replicas.c.id.in_(rids)))
        return len(ids), len(rids)
