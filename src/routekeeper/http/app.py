"""The app factory. One ASGI app serves ``/v1`` (router), ``/api`` (dashboard API) and the
operational endpoints; nothing is built at import time."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from routekeeper import __version__
from routekeeper.dashboard.routes import replay as replay_routes
from routekeeper.dashboard.routes import routing as routing_routes
from routekeeper.dashboard.routes import status as status_routes
from routekeeper.http import ops
from routekeeper.http.errors import install_error_handlers
from routekeeper.http.limits import BodySizeLimit
from routekeeper.router.routes import v1 as v1_routes
from routekeeper.router.services.chat import ChatService
from routekeeper.router.services.exchange import ChatExchanges
from routekeeper.router.services.metrics import RouterMetrics
from routekeeper.router.services.replay import ReplayRecorder
from routekeeper.routing.engine import RoutingEngine, build_embedder
from routekeeper.runtime.replica import ReplicaRuntime
from routekeeper.settings import Settings
from routekeeper.storage.state import StateStorage
from routekeeper.upstream.openai import UpstreamPool


def create_app(
    settings: Settings,
    *,
    listen: str | None = None,
    on_fatal: Callable[[str], None] | None = None,
    upstream_transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """Build the application for ``settings``. Raises ContractViolation when the state
    contract does not hold. Storage opens, migrates and registers the replica in the
    background once the lifespan starts (the routing engine embeds its candidates first);
    ``/readyz`` is 503 until then. ``upstream_transport`` replaces the network under every
    OpenAI-compatible model (tests, fault injection)."""
    storage = StateStorage(settings)
    engine = RoutingEngine(settings, build_embedder(settings))
    pool = UpstreamPool(transport=upstream_transport)
    recorder = ReplayRecorder(
        storage.replay,
        enabled=settings.replay.enabled,
        queue_max=settings.replay.queue_max,
        flush_interval_ms=settings.replay.flush_interval_ms,
        durability=settings.replay.durability,
        ack_timeout_ms=settings.replay.ack_timeout_ms,
    )
    components = (recorder,)
    runtime = ReplicaRuntime(
        settings,
        storage,
        listen=listen,
        on_fatal=on_fatal,
        prepare=engine.prepare,
        components=components,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime.begin_startup()
        try:
            yield
        finally:
            try:
                await runtime.stop()
            finally:
                await pool.aclose()
                await engine.aclose()

    app = FastAPI(
        title="routekeeper",
        version=__version__,
        lifespan=lifespan,
        # FastAPI's Swagger UI and ReDoc pages load their scripts from a CDN, and nothing
        # here may fetch from the internet: /openapi.json is the API's description.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.runtime = runtime
    app.state.engine = engine
    app.state.metrics = metrics = RouterMetrics(components)
    app.state.exchanges = ChatExchanges(
        ChatService(settings, engine, pool),
        recorder,
        metrics,
        runtime,
        ping_seconds=settings.server.sse_ping_seconds,
    )
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.server.max_request_bytes)
    app.include_router(ops.router)
    app.include_router(v1_routes.router)
    app.include_router(status_routes.router)
    app.include_router(routing_routes.router)
    app.include_router(replay_routes.router)
    return app
