"""``routekeeper serve``: run one replica."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from types import FrameType
from typing import Annotated

import typer
import uvicorn

from routekeeper.cli.common import (
    EXIT_CONTRACT,
    EXIT_FAILURE,
    ConfigOption,
    WorkspaceOption,
    fail,
    settings_from,
)
from routekeeper.contract.errors import ContractViolation
from routekeeper.http.app import create_app
from routekeeper.runtime.replica import ReplicaRuntime

log = logging.getLogger("routekeeper.serve")

# Seconds of server.graceful_timeout_seconds kept for the final phase writes after open
# requests have had their turn.
SHUTDOWN_RESERVE_SECONDS = 1.0


class ReplicaServer(uvicorn.Server):
    """uvicorn's server, plus: SIGTERM/SIGINT turns the replica ``draining`` at once (so
    /readyz goes 503 while requests finish), and a fatal startup error ends the process."""

    runtime: ReplicaRuntime | None = None
    fatal: str | None = None
    _loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list | None = None) -> None:  # type: ignore[override]
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        if sig == signal.SIGTERM:
            # uvicorn re-raises captured signals after shutdown; a drained replica that
            # reached `stopped` exits 0 instead of dying by SIGTERM.
            self._captured_signals = [s for s in self._captured_signals if s != signal.SIGTERM]
        runtime, loop = self.runtime, self._loop
        if runtime is not None and loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(lambda: loop.create_task(runtime.drain()))

    def on_fatal(self, message: str) -> None:
        self.fatal = message
        self.should_exit = True


def serve(
    config: ConfigOption = None,
    workspace: WorkspaceOption = None,
    host: Annotated[
        str | None, typer.Option(help="Address to bind [default: server.host].")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port to bind [default: server.port].")] = None,
) -> None:
    """Run a replica: migrate, recover, then serve /v1, /api, /livez and /readyz."""
    settings = settings_from(config, workspace)
    server_settings = settings.server.model_copy(
        update={k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    )
    settings = settings.model_copy(update={"server": server_settings})
    logging.basicConfig(
        level=server_settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    listen = f"{server_settings.host}:{server_settings.port}"
    server_box: list[ReplicaServer] = []
    try:
        app = create_app(
            settings, listen=listen, on_fatal=lambda message: server_box[0].on_fatal(message)
        )
    except ContractViolation as exc:
        fail(exc.message, EXIT_CONTRACT)
    uv_config = uvicorn.Config(
        app,
        host=server_settings.host,
        port=server_settings.port,
        log_config=None,
        log_level=server_settings.log_level,
        # uvicorn takes whole seconds here.
        timeout_graceful_shutdown=max(
            1, int(server_settings.graceful_timeout_seconds - SHUTDOWN_RESERVE_SECONDS)
        ),
        lifespan="on",
        access_log=server_settings.log_level == "debug",
    )
    server = ReplicaServer(uv_config)
    server.runtime = app.state.runtime
    server_box.append(server)
    log.info(
        "replica %s starting on http://%s (workspace %s)",
        server.runtime.id,
        listen,
        settings.workspace,
    )
    server.run()
    if server.fatal:
        fail(server.fatal, EXIT_FAILURE)
    if not server.started:
        fail(f"the server could not start on {listen}", EXIT_FAILURE)
