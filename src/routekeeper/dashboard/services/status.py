"""What the dashboard shows of the replicas: the status snapshot, replicas and runtime
events."""

from __future__ import annotations

from collections.abc import Sequence

from routekeeper.contract.pages import Page, SortOrder
from routekeeper.contract.runtime import ReplicaPhase, ReplicaRecord, RuntimeEvent, RuntimeEventKind
from routekeeper.runtime.replica import ReplicaRuntime
from routekeeper.runtime.status import StatusSnapshot, status_snapshot


class StatusQueries:
    def __init__(self, runtime: ReplicaRuntime) -> None:
        self.runtime = runtime

    @property
    def replica_id(self) -> str:
        """The replica answering."""
        return self.runtime.id

    async def snapshot(self) -> StatusSnapshot:
        return await status_snapshot(self.runtime)

    async def replicas(
        self,
        *,
        limit: int,
        order: SortOrder,
        after: str | None = None,
        before: str | None = None,
        phases: Sequence[ReplicaPhase] | None = None,
    ) -> Page[ReplicaRecord]:
        return await self.runtime.storage.runtime.list_replicas(
            limit=limit, order=order, after=after, before=before, phases=phases
        )

    async def events(
        self,
        *,
        limit: int,
        order: SortOrder,
        after: int | None = None,
        before: int | None = None,
        replica_id: str | None = None,
        kind: RuntimeEventKind | None = None,
    ) -> Page[RuntimeEvent]:
        return await self.runtime.storage.runtime.list_events(
            limit=limit, order=order, after=after, before=before, replica_id=replica_id, kind=kind
        )
