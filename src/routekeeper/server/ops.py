"""Liveness and readiness, for process supervisors and load balancers; Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from routekeeper.router.services.metrics import RouterMetrics
from routekeeper.runtime.replica import ReplicaRuntime


def router(runtime: ReplicaRuntime) -> APIRouter:
    """``/livez`` and ``/readyz`` of ``runtime`` (always open)."""
    routes = APIRouter(tags=["ops"])

    @routes.get("/livez", operation_id="livez")
    async def livez() -> dict[str, Any]:
        """200 while the process serves HTTP at all (whatever its phase)."""
        return {"status": "alive", "replica_id": runtime.id, "phase": runtime.phase.value}

    @routes.get(
        "/readyz",
        operation_id="readyz",
        responses={503: {"description": "Not ready: the body names the phase."}},
    )
    async def readyz() -> JSONResponse:
        """200 once the replica is ``ready``; 503 with the phase before that and while draining."""
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

    return routes


def metrics_router(metrics: RouterMetrics) -> APIRouter:
    """``/metrics`` (open, or admin keys only: ``auth.metrics``)."""
    routes = APIRouter(tags=["ops"])

    @routes.get("/metrics", operation_id="metrics", response_class=Response)
    async def get_metrics() -> Response:
        """Prometheus metrics of this replica (its own registry)."""
        body = metrics.render()
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return routes
