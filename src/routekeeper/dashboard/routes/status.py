"""``/api/status``, ``/api/replicas`` and ``/api/runtime/events``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from routekeeper.contract.ids import id_pattern
from routekeeper.contract.pages import DEFAULT_PAGE_SIZE, SortOrder
from routekeeper.contract.runtime import ReplicaPhase, RuntimeEventKind
from routekeeper.dashboard.query import api_router
from routekeeper.dashboard.schemas import (
    ReplicaOut,
    RuntimeEventOut,
    StatusOut,
    SurfaceOut,
)
from routekeeper.dashboard.services.status import StatusQueries
from routekeeper.http.pages import Limit, ListPage, Order

ReplicaIdQuery = Annotated[
    str | None, Query(pattern=id_pattern("rep"), description="A replica id (rep_...).")
]


def router(status: StatusQueries) -> APIRouter:
    """Status, replicas and runtime events of the replica ``status`` reads."""
    routes = api_router(prefix="/api", tags=["status"])

    @routes.get(
        "/status", operation_id="get_status", response_model=StatusOut, response_model_by_alias=True
    )
    async def get_status() -> StatusOut:
        """Replicas (newest first, this one included) and every registered surface with its
        class, backend, whether it is ephemeral, its row count, and what this replica's
        component of it reports (``component``; e.g. the replay writer's queue and counters)."""
        snap = await status.snapshot()
        return StatusOut(
            replica_id=snap.replica_id,
            phase=snap.phase,
            mode=snap.mode,
            replicas=[ReplicaOut.of(r, status.replica_id) for r in snap.replicas],
            replicas_has_more=snap.replicas_more,
            surfaces=[
                SurfaceOut(
                    name=s.placement.surface.name,
                    owner=s.placement.surface.owner.value,
                    class_=s.placement.surface.state_class.value,
                    durable=s.placement.surface.durable,
                    shared=s.placement.surface.shared,
                    backend=s.placement.backend,
                    backend_type=s.placement.kind.value,
                    location=s.placement.location,
                    ephemeral=s.placement.ephemeral,
                    rows=s.rows,
                    error=s.error,
                    restart_expectation=s.placement.surface.restart_expectation,
                    recovery=s.placement.surface.recovery,
                    component=snap.components.get(s.placement.surface.name),
                    workers=snap.workers.get(s.placement.surface.name),
                )
                for s in snap.surfaces
            ],
            errors=snap.errors,
        )

    @routes.get("/replicas", operation_id="list_replicas", response_model=ListPage[ReplicaOut])
    async def list_replicas(
        limit: Limit = DEFAULT_PAGE_SIZE,
        order: Order = SortOrder.DESC,
        after: ReplicaIdQuery = None,
        before: ReplicaIdQuery = None,
        phase: Annotated[list[ReplicaPhase] | None, Query()] = None,
    ) -> ListPage[ReplicaOut]:
        """Every replica that registered, by id (newest first by default)."""
        page = await status.replicas(
            limit=limit, order=order, after=after, before=before, phases=phase
        )
        return ListPage.of(page, lambda r: ReplicaOut.of(r, status.replica_id))

    @routes.get(
        "/runtime/events",
        operation_id="list_runtime_events",
        response_model=ListPage[RuntimeEventOut],
    )
    async def list_runtime_events(
        limit: Limit = DEFAULT_PAGE_SIZE,
        order: Order = SortOrder.DESC,
        after: Annotated[int | None, Query(ge=0, le=2**62)] = None,
        before: Annotated[int | None, Query(ge=0, le=2**62)] = None,
        replica_id: ReplicaIdQuery = None,
        kind: RuntimeEventKind | None = None,
    ) -> ListPage[RuntimeEventOut]:
        """Typed runtime events (phase changes), newest first by default."""
        page = await status.events(
            limit=limit, order=order, after=after, before=before, replica_id=replica_id, kind=kind
        )
        return ListPage.of(page, RuntimeEventOut.of)

    return routes
