"""The app factory. One ASGI app serves ``/v1`` (router), ``/api`` (dashboard API) and the
operational endpoints of one replica (``routekeeper.compose``); nothing is built at import
time. Every route module is a router factory that takes the services it uses."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI

from routekeeper import __version__
from routekeeper.compose import Replica, build_replica
from routekeeper.contract.auth import Access
from routekeeper.dashboard.routes import conversations as conversations_api_routes
from routekeeper.dashboard.routes import evaluation as evaluation_routes
from routekeeper.dashboard.routes import jobs as jobs_routes
from routekeeper.dashboard.routes import keys as keys_routes
from routekeeper.dashboard.routes import replay as replay_routes
from routekeeper.dashboard.routes import responses as responses_api_routes
from routekeeper.dashboard.routes import routing as routing_routes
from routekeeper.dashboard.routes import status as status_routes
from routekeeper.dashboard.services.conversations import ConversationQueries
from routekeeper.dashboard.services.evaluation import EvaluationQueries
from routekeeper.dashboard.services.keys import KeyAdmin
from routekeeper.dashboard.services.replay import ReplayQueries
from routekeeper.dashboard.services.responses import ResponseQueries
from routekeeper.dashboard.services.status import StatusQueries
from routekeeper.http.access import Guard, RateLimitHeaders, document_access, key_check
from routekeeper.http.errors import install_error_handlers
from routekeeper.http.limits import BodySizeLimit
from routekeeper.router.routes import conversations as conversations_routes
from routekeeper.router.routes import responses as responses_routes
from routekeeper.router.routes import v1 as v1_routes
from routekeeper.router.services.conversations import ConversationsService
from routekeeper.server import ops
from routekeeper.settings import Settings


def create_app(
    settings: Settings,
    *,
    listen: str | None = None,
    on_fatal: Callable[[str], None] | None = None,
) -> FastAPI:
    """Build the application for ``settings`` (see ``build_replica``: ContractViolation when
    the state contract does not hold). Storage opens, migrates and registers the replica in
    the background once the lifespan starts; ``/readyz`` is 503 until then."""
    replica = build_replica(settings, listen=listen, on_fatal=on_fatal)
    return app_for(replica)


def app_for(replica: Replica) -> FastAPI:
    """The ASGI app that serves ``replica``; its lifespan starts and stops the replica."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        replica.runtime.begin_startup()
        try:
            yield
        finally:
            try:
                await replica.runtime.stop()
            finally:
                await replica.aclose()

    app = FastAPI(
        title="routekeeper",
        version=__version__,
        lifespan=lifespan,
        # FastAPI's Swagger UI and ReDoc pages load their scripts from a CDN, and nothing
        # here may fetch from the internet: /openapi.json is the API's description.
        docs_url=None,
        redoc_url=None,
        **_without_native_telemetry(),
    )
    app.state.replica = replica  # for tools and tests; routes get their services passed in
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=replica.settings.server.max_request_bytes)
    if replica.authenticator.enabled:
        app.add_middleware(RateLimitHeaders)
    include_routes(app, replica)
    document_access(app)
    return app


def _without_native_telemetry() -> dict[str, Any]:
    """FastAPI versions with native OpenTelemetry look up three providers (environment reads)
    on every request; routekeeper exports no telemetry, so that is switched off."""
    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}


def include_routes(app: FastAPI, replica: Replica) -> None:
    """The route list, and each router's access (declared here, once per route: a test
    checks every route has exactly one guard). Each router factory gets the services its
    routes use. The hot paths, ``POST /v1/chat/completions`` and ``POST /v1/responses``, come
    first as plain routes (matched before any router, no dependency resolution: they call
    their guard themselves); their API routes in ``v1`` and ``responses`` describe them in
    /openapi.json."""
    check = key_check(replica.authenticator.authenticate, replica.limiter.hit)
    open_, member, admin = (Guard(level, check) for level in Access)
    metrics_access = admin if replica.settings.auth.metrics == "admin" else open_
    app.add_route(
        "/v1/chat/completions",
        v1_routes.chat_completion_endpoint(replica.exchanges, member),
        methods=["POST"],
        include_in_schema=False,
    )
    app.add_route(
        "/v1/responses",
        responses_routes.create_response_endpoint(replica.responses, member),
        methods=["POST"],
        include_in_schema=False,
    )
    conversations = ConversationsService(replica.storage)
    routers = [
        (ops.router(replica.runtime), open_),
        (ops.metrics_router(replica.metrics), metrics_access),
        (v1_routes.router(replica.exchanges), member),
        (responses_routes.router(replica.responses), member),
        (conversations_routes.router(conversations), member),
        (status_routes.router(StatusQueries(replica.runtime)), admin),
        (routing_routes.router(replica.engine), admin),
        (replay_routes.router(ReplayQueries(replica.storage)), admin),
        (responses_api_routes.router(ResponseQueries(replica.storage)), admin),
        (conversations_api_routes.router(ConversationQueries(replica.storage)), admin),
        (keys_routes.router(KeyAdmin(replica.storage, replica.authenticator.revoked)), admin),
        (evaluation_routes.router(EvaluationQueries(replica.storage)), admin),
        (
            jobs_routes.router(
                replica.jobs,
                ping_seconds=replica.settings.server.sse_ping_seconds,
                until=lambda: replica.runtime.shutdown_deadline,
            ),
            admin,
        ),
    ]
    for router, guard in routers:
        app.include_router(router, dependencies=[Depends(guard)])
