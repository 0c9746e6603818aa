"""``/api/status``, ``/api/replicas`` and ``/api/runtime/events``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Request

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
from routekeeper.http.pages import Limit, ListPage, Order
from routekeeper.runtime.replica import ReplicaRuntime
from routekeeper.runtime.status import status_snapshot

router = api_router(prefix="/api", tags=["status"])

ReplicaIdQuery = Annotated[
    str | None, Query(pattern=id_pattern("rep"), description="A replica id (rep_...).")
]


def _runtime(request: Request) -> ReplicaRuntime:
    runtime: ReplicaRuntime = request.app.state.runtime
    return runtime


@router.get(
    "/status", operation_id="get_status", response_model=StatusOut, response_model_by_alias=True
)
async def get_status(request: Request) -> StatusOut:
    """Replicas (newest first, this one included) and every registered surface with its
    class, backend, whether it is ephemeral, its row count, and what this replica's
    component of it reports (``component``; e.g. the replay writer's queue and counters)."""
    runtime = _runtime(request)
    snap = await status_snapshot(runtime)
    return StatusOut(
        replica_id=snap.replica_id,
        phase=snap.phase,
        mode=snap.mode,
        replicas=[ReplicaOut.of(r, runtime.id) for r in snap.replicas],
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
            )
            for s in snap.surfaces
        ],
        errors=snap.errors,
    )


@router.get("/replicas", operation_id="list_replicas", response_model=ListPage[ReplicaOut])
async def list_replicas(
    request: Request,
    limit: Limit = DEFAULT_PAGE_SIZE,
    order: Order = SortOrder.DESC,
    after: ReplicaIdQuery = None,
    before: ReplicaIdQuery = None,
    phase: Annotated[list[ReplicaPhase] | None, Query()] = None,
) -> ListPage[ReplicaOut]:
    """Every replica that registered, by id (newest first by default)."""
    runtime = _runtime(request)
    page = await runtime.storage.runtime.list_replicas(
        limit=limit, order=order, after=after, before=before, phases=phase
    )
    return ListPage.of(page, lambda r: ReplicaOut.of(r, runtime.id))


@router.get(
    "/runtime/events", operation_id="list_runtime_events", response_model=ListPage[RuntimeEventOut]
)
async def list_runtime_events(
    request: Request,
    limit: Limit = DEFAULT_PAGE_SIZE,
    order: Order = SortOrder.DESC,
    after: Annotated[int | None, Query(ge=0, le=2**62)] = None,
    before: Annotated[int | None, Query(ge=0, le=2**62)] = None,
    replica_id: ReplicaIdQuery = None,
    kind: RuntimeEventKind | None = None,
) -> ListPage[RuntimeEventOut]:
    """Typed runtime events (phase changes), newest first by default."""
    runtime = _runtime(request)
    page = await runtime.storage.runtime.list_events(
        limit=limit, order=order, after=after, before=before, replica_id=replica_id, kind=kind
    )
    return ListPage.of(page, RuntimeEventOut.of)
