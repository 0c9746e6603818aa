"""The app factory. One ASGI app serves ``/v1`` (router), ``/api`` (dashboard API) and the
operational endpoints; nothing is built at import time."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from routekeeper import __version__
from routekeeper.dashboard.routes import status as status_routes
from routekeeper.http import ops
from routekeeper.http.errors import install_error_handlers
from routekeeper.runtime.replica import ReplicaRuntime
from routekeeper.settings import Settings
from routekeeper.storage.state import StateStorage


def create_app(
    settings: Settings,
    *,
    listen: str | None = None,
    on_fatal: Callable[[str], None] | None = None,
) -> FastAPI:
    """Build the application for ``settings``. Raises ContractViolation when the state
    contract does not hold. Storage opens, migrates and registers the replica in the
    background once the lifespan starts; ``/readyz`` is 503 until then."""
    storage = StateStorage(settings)
    runtime = ReplicaRuntime(settings, storage, listen=listen, on_fatal=on_fatal)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime.begin_startup()
        try:
            yield
        finally:
            await runtime.stop()

    app = FastAPI(
        title="routekeeper",
        version=__version__,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.runtime = runtime
    install_error_handlers(app)
    app.include_router(ops.router)
    app.include_router(status_routes.router)
    return app
