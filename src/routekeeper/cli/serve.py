"""``routekeeper serve``: run one replica, or a supervisor and N worker replicas on one port
(``--workers N``, see ``cli.workers``)."""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
import uvicorn
from pydantic import ValidationError

from routekeeper.cli.common import (
    EXIT_CONFIG,
    EXIT_CONTRACT,
    EXIT_FAILURE,
    ConfigOption,
    WorkspaceOption,
    fail,
    require_drivers,
    settings_from,
    warn,
)
from routekeeper.cli.workers import (
    Supervisor,
    WorkerSpec,
    bind,
    die_with_parent,
    inherited_socket,
)
from routekeeper.compose import build_replica
from routekeeper.contract.errors import ConfigError, ContractViolation
from routekeeper.runtime.replica import ReplicaRuntime
from routekeeper.runtime.worker_board import WorkerBoard
from routekeeper.server.app import app_for
from routekeeper.server.protocol import http_protocol, parser_name
from routekeeper.settings import ServerSettings, Settings, config_problems
from routekeeper.storage.placement import check_contract

log = logging.getLogger("routekeeper.serve")

# How long the event loop's thread may keep the GIL while another thread waits for it
# (Python's default is 5 ms). The SQLite writer thread gives up the GIL for every statement
# step and needs it back to go on; with the default, a write transaction under load held the
# database's write lock for several times 5 ms, and the other workers of `serve --workers N`
# waited that long for it (ARCHITECTURE.md, "Workers").
SWITCH_INTERVAL_SECONDS = 0.0005

# Seconds of server.graceful_timeout_seconds kept for the final phase writes after open
# requests have had their turn.
SHUTDOWN_RESERVE_SECONDS = 1.0


async def freeze_when_ready(runtime: ReplicaRuntime) -> None:
    """Once the replica serves, move every object alive then (modules, the app, its
    settings: over a hundred thousand) out of the garbage collector's reach: otherwise each
    full collection under load walks them all again, for nothing (they live as long as the
    process). Objects made later are collected as before."""
    await runtime.became_ready.wait()
    gc.collect()
    gc.freeze()


class ReplicaServer(uvicorn.Server):
    """uvicorn's server, plus the replica's shutdown: on SIGTERM (or SIGINT) the replica turns
    ``draining`` at once (``/readyz`` 503); after ``server.drain_seconds`` the port closes and
    open requests get the rest of the graceful budget; a drained replica exits 0. A second
    signal skips the delay. A fatal startup error ends the process. A worker (``supervised``)
    ignores SIGINT: Ctrl-C reaches the whole process group, and the supervisor forwards it as
    SIGTERM; counting both would make the first signal a second one and skip the drain."""

    def __init__(
        self,
        config: uvicorn.Config,
        runtime: ReplicaRuntime,
        drain_seconds: float,
        *,
        supervised: bool = False,
    ):
        super().__init__(config)
        self.supervised = supervised
        self.runtime = runtime
        self.drain_seconds = drain_seconds
        self.fatal: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._exit_requested = False
        self._drain_task: asyncio.Task[None] | None = None

    async def serve(self, sockets: list | None = None) -> None:  # type: ignore[override]
        self._loop = asyncio.get_running_loop()
        freezer = asyncio.ensure_future(freeze_when_ready(self.runtime))
        try:
            await super().serve(sockets)
        finally:
            freezer.cancel()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.supervised and sig == signal.SIGINT:
            return
        loop = self._loop
        first = not self._exit_requested
        self._exit_requested = True
        if loop is None or loop.is_closed():
            self._close_port(sig, frame)
            return
        if first:
            loop.call_soon_threadsafe(self._start_drain)
        if first and self.drain_seconds > 0:
            loop.call_soon_threadsafe(
                loop.call_later, self.drain_seconds, self._close_port, sig, frame
            )
        else:
            self._close_port(sig, frame)

    def _start_drain(self) -> None:
        self._drain_task = asyncio.get_running_loop().create_task(self.runtime.drain())

    def _close_port(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        if sig == signal.SIGTERM:
            # uvicorn re-raises captured signals after shutdown; a drained replica that
            # reached `stopped` exits 0 instead of dying by SIGTERM.
            self._captured_signals = [s for s in self._captured_signals if s != signal.SIGTERM]

    def on_fatal(self, message: str) -> None:
        self.fatal = message
        self.should_exit = True


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


LOG_FORMAT = "%(asctime)s %(levelname)s {who}%(name)s: %(message)s"


def with_listen_flags(
    settings: Settings, host: str | None, port: int | None, workers: int | None = None
) -> Settings:
    """``settings`` with ``--host``/``--port``/``--workers`` applied, validated as
    ``server.host``, ``server.port`` and ``server.workers`` would be in the file (exit 2 with
    the key path)."""
    flags = {
        k: v for k, v in {"host": host, "port": port, "workers": workers}.items() if v is not None
    }
    if not flags:
        return settings
    try:
        server = ServerSettings.model_validate({**settings.server.model_dump(), **flags})
    except ValidationError as exc:
        problems = config_problems(exc, under=("server",))
        names = " and ".join(f"--{k}" for k in flags)
        fail(ConfigError(problems, source=names).message, EXIT_CONFIG)
    return settings.model_copy(update={"server": server})


def serve(
    config: ConfigOption = None,
    workspace: WorkspaceOption = None,
    host: Annotated[
        str | None,
        typer.Option(help="Address to bind (default: server.host, 127.0.0.1)."),
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port to bind (default: server.port, 8080).")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Worker processes on the one port, each its own replica (default: "
            "server.workers, 1). One machine: they may share the workspace's SQLite; several "
            "machines: PostgreSQL and state.mode: shared."
        ),
    ] = None,
    worker: Annotated[str | None, typer.Option(hidden=True)] = None,
) -> None:
    """Run a replica (or --workers N of them on one port): migrate, recover, then serve /v1,
    /api, /livez and /readyz."""
    if worker is not None:  # started by a supervisor: die with it, whatever happens next
        spec = WorkerSpec.decode(worker)
        die_with_parent(spec.parent_pid)
    settings = with_listen_flags(settings_from(config, workspace), host, port, workers)
    require_drivers(settings)
    if not settings.models and worker is None:
        warn(
            "no model is configured, so every chat completion is refused (404 "
            "model_not_found); give a configuration with models and decisions, e.g. "
            "--config examples/routekeeper.yaml"
        )
    if worker is not None:
        board = WorkerBoard(spec.board_fd, spec.slots, spec.slot)
        sock = inherited_socket(spec.socket_fd)
        run_replica(settings, sockets=[sock], board=board, who=f"worker {spec.slot} ")
    elif settings.server.workers > 1:
        supervise(settings, config)
    else:
        run_replica(settings)


def _configure_logging(settings: Settings, who: str) -> None:
    logging.basicConfig(
        level=settings.server.log_level.upper(),
        format=LOG_FORMAT.format(who=f"[{who}] " if who else ""),
        stream=sys.stderr,
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)


def supervise(settings: Settings, config: Path | None) -> None:
    """Bind the port once, run ``server.workers`` workers on it until SIGTERM; exit 0 when
    every worker drained."""
    server_settings = settings.server
    _configure_logging(settings, "supervisor")
    try:
        check_contract(settings, processes=server_settings.workers)
    except ContractViolation as exc:
        fail(exc.message, EXIT_CONTRACT)
    listen = f"{server_settings.host}:{server_settings.port}"
    try:
        sock = bind(server_settings.host, server_settings.port)
    except OSError as exc:
        fail(f"could not listen on {listen}: {exc.strerror or exc}", EXIT_FAILURE)
    bound_port = sock.getsockname()[1]

    def command(spec: WorkerSpec) -> list[str]:
        cmd = [sys.executable, "-m", "routekeeper", "serve"]
        cmd += ["--workspace", str(settings.workspace)]
        if config is not None:
            cmd += ["--config", str(config.resolve())]
        host = server_settings.host
        return [*cmd, "--host", host, "--port", str(bound_port), "--worker", spec.encode()]

    log.info(
        "supervisor %d: %d workers on http://%s:%d (workspace %s)",
        os.getpid(),
        server_settings.workers,
        server_settings.host,
        bound_port,
        settings.workspace,
    )
    supervisor = Supervisor(
        workers=server_settings.workers,
        sock=sock,
        command=command,
        graceful_timeout_seconds=server_settings.graceful_timeout_seconds,
    )
    code = supervisor.run()
    if supervisor.gave_up:
        fail(supervisor.gave_up, EXIT_FAILURE)
    if code:
        fail("not every worker stopped cleanly (see the log above)", code)


def run_replica(
    settings: Settings,
    *,
    sockets: list[socket.socket] | None = None,
    board: WorkerBoard | None = None,
    who: str = "",
) -> None:
    """Serve one replica until SIGTERM (on ``sockets`` when a supervisor bound the port)."""
    server_settings = settings.server
    listen = f"{server_settings.host}:{server_settings.port}"
    server_box: list[ReplicaServer] = []
    if not who:
        _configure_logging(settings, "")
    try:
        replica = build_replica(
            settings,
            listen=listen,
            on_fatal=lambda message: server_box[0].on_fatal(message),
            board=board,
        )
    except ContractViolation as exc:
        fail(exc.message, EXIT_CONTRACT)
    runtime = replica.runtime
    if who:  # a worker's log lines name its replica, so an operator can tell them apart
        _configure_logging(settings, f"{who}{runtime.id}")
    http = http_protocol()
    uv_config = uvicorn.Config(
        app_for(replica),
        host=server_settings.host,
        port=server_settings.port,
        log_config=None,
        log_level=server_settings.log_level,
        # uvicorn takes whole seconds here.
        timeout_graceful_shutdown=max(
            1,
            int(
                server_settings.graceful_timeout_seconds
                - server_settings.drain_seconds
                - SHUTDOWN_RESERVE_SECONDS
            ),
        ),
        lifespan="on",
        access_log=server_settings.log_level == "debug",
        # uvloop and httptools when installed (dependencies on CPython off Windows), else
        # asyncio's loop and h11.
        loop="auto",
        http=http,
    )
    server = ReplicaServer(
        uv_config, runtime, server_settings.drain_seconds, supervised=board is not None
    )
    server_box.append(server)
    log.info(
        "replica %s starting on http://%s (workspace %s; event loop %s, HTTP parser %s)",
        runtime.id,
        listen,
        settings.workspace,
        "uvloop" if _installed("uvloop") else "asyncio",
        parser_name(http),
    )
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
    try:
        server.run(sockets=sockets)
    except SystemExit:  # uvicorn exits this way when it cannot bind
        fail(f"could not listen on {listen} (see the log above)", EXIT_FAILURE)
    if server.fatal:
        fail(server.fatal, EXIT_FAILURE)
    if not server.started:
        fail(f"the server could not start on {listen}", EXIT_FAILURE)
    if runtime.stop_error:
        fail(f"replica {runtime.id} did not stop cleanly: {runtime.stop_error}", EXIT_FAILURE)
