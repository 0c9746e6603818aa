"""Liveness and readiness, for process supervisors and load balancers."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from routekeeper.runtime.replica import ReplicaRuntime

router = APIRouter(tags=["ops"])


def _runtime(request: Request) -> ReplicaRuntime:
    runtime: ReplicaRuntime = request.app.state.runtime
    return runtime


@router.get("/livez", operation_id="livez")
async def livez(request: Request) -> dict[str, Any]:
    """200 while the process serves HTTP at all (whatever its phase)."""
    runtime = _runtime(request)
    return {"status": "alive", "replica_id": runtime.id, "phase": runtime.phase.value}


@router.get(
    "/readyz",
    operation_id="readyz",
    responses={503: {"description": "Not ready: the body names the phase."}},
)
async def readyz(request: Request) -> JSONResponse:
    """200 once the replica is ``ready``; 503 with the phase before that and while draining."""
    runtime = _runtime(request)
    body: dict[str, Any] = {
        "ready": runtime.ready,
        "phase": runtime.phase.value,
        "replica_id": runtime.id,
        # degraded: the last heartbeat could not be stored (the database is unreachable)
        "storage": "degraded" if runtime.last_heartbeat_error else "ok",
    }
    if runtime.error:
        body["error"] = runtime.error
    return JSONResponse(body, status_code=200 if runtime.ready else 503)


@router.get("/metrics", operation_id="metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus metrics of this replica (its own registry)."""
    body = request.app.state.metrics.render()
    return Response(body, media_type=CONTENT_TYPE_LATEST)
