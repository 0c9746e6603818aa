"""``routekeeper worker``: job slots without HTTP. The process is a replica of its own (its
id, liveness lock, heartbeat, phases, crash sweep and recovery) on the same state as the
``serve`` processes, so a worker that dies has its jobs requeued like any replica's."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import Annotated

import typer

from routekeeper.cli.common import (
    EXIT_CONTRACT,
    EXIT_FAILURE,
    ConfigOption,
    WorkspaceOption,
    fail,
    require_drivers,
    settings_from,
)
from routekeeper.compose import Replica, build_replica
from routekeeper.contract.errors import ContractViolation, RoutekeeperError

log = logging.getLogger("routekeeper.worker")


def worker(
    config: ConfigOption = None,
    workspace: WorkspaceOption = None,
    concurrency: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=256,
            help="Jobs this worker runs at once (default: jobs.concurrency, at least 1).",
        ),
    ] = None,
) -> None:
    """Run durable jobs without serving HTTP: a replica with job slots (migrate, recover,
    then claim queued jobs) until SIGTERM or SIGINT."""
    settings = settings_from(config, workspace)
    require_drivers(settings)
    slots = concurrency if concurrency is not None else max(1, settings.jobs.concurrency)
    logging.basicConfig(
        level=settings.server.log_level.upper(),
        format="%(asctime)s %(levelname)s [worker] %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    fatal: list[str] = []
    try:
        replica = build_replica(settings, on_fatal=fatal.append, job_slots=slots)
    except ContractViolation as exc:
        fail(exc.message, EXIT_CONTRACT)
    error = asyncio.run(_run(replica, fatal))
    if error:
        fail(error, EXIT_FAILURE)


async def _run(replica: Replica, fatal: list[str]) -> str | None:
    """Start, run until a signal (or a fatal error), stop; the error to exit with, if any."""
    runtime = replica.runtime
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def on_fatal(message: str) -> None:
        fatal.append(message)
        stop.set()

    runtime.on_fatal = on_fatal
    try:
        try:
            await runtime.start()
        except RoutekeeperError as exc:
            return f"worker {runtime.id} could not start: {exc.message}"
        log.info(
            "worker replica %s ready with %d job slot(s) for kinds: %s",
            runtime.id,
            replica.runner.concurrency,
            ", ".join(sorted(replica.runner.kinds)),
        )
        await stop.wait()
        log.info("worker replica %s stopping", runtime.id)
    finally:
        try:
            await runtime.stop()
        finally:
            await replica.aclose()
    if fatal:
        return fatal[0]
    if runtime.stop_error:
        return f"worker {runtime.id} did not stop cleanly: {runtime.stop_error}"
    return None
