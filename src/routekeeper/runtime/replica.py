"""This process as a replica of routekeeper.

Phases are kept in memory (for ``/readyz``) and in the ``runtime_status`` surface, each change
with its ``replica.phase_changed`` event in the same transaction. The first changes
(``starting``, ``migrating``) happen before the schema is known to exist: they are held in
memory with their times and stored in the transaction that registers the replica, right after
migration.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Sequence

from routekeeper import __version__
from routekeeper.contract.errors import RoutekeeperError, StorageError
from routekeeper.contract.ids import new_id
from routekeeper.contract.runtime import (
    PhaseChange,
    ReplicaPhase,
    ReplicaRecord,
    transition_allowed,
)
from routekeeper.runtime.components import Component
from routekeeper.runtime.retention import apply_retention
from routekeeper.runtime.worker_board import WorkerBoard
from routekeeper.settings import Settings
from routekeeper.storage.liveness import IdentityTaken, LockCheck
from routekeeper.storage.recovery import RecoveryContext, run_recovery, sweep
from routekeeper.storage.state import StateStorage
from routekeeper.storage.types import utcnow
from routekeeper.tasks import cancel_and_wait

log = logging.getLogger(__name__)

PRUNE_EVERY_SECONDS = 600.0


class ReplicaRuntime:
    """Owns the storage of the process and walks the replica through its phases."""

    def __init__(
        self,
        settings: Settings,
        storage: StateStorage,
        *,
        listen: str | None = None,
        on_fatal: Callable[[str], None] | None = None,
        prepare: Callable[[], Awaitable[None]] | None = None,
        components: Sequence[Component] = (),
        board: WorkerBoard | None = None,
    ) -> None:
        self.settings = settings
        self.storage = storage
        self.id = new_id("rep")
        self.listen = listen
        self.started_at = utcnow()
        self.phase = ReplicaPhase.STARTING
        self.error: str | None = None
        self.on_fatal = on_fatal
        self._prepare = prepare
        self.components = tuple(components)
        """Surfaces' background parts: begun when ready, stopped before ``stopped``."""
        self.board = board
        """The worker board of ``serve --workers N`` (None: a single process)."""
        self._history: list[PhaseChange] = [
            PhaseChange(None, ReplicaPhase.STARTING, self.started_at)
        ]
        self._registered = False
        self._became_ready = False
        self._phase_lock = asyncio.Lock()
        self._startup: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._pruner: asyncio.Task[None] | None = None
        self._healthy_since: float | None = None
        """Loop time since which this replica is settled: its liveness lock held on one
        session and every heartbeat stored (None: not now). Judging others needs it."""
        self._lock_held = False
        self._deadline: float | None = None
        self.became_ready = asyncio.Event()
        """Set once the replica first turns ``ready`` (it serves from then on)."""
        self.shutting_down = asyncio.Event()
        """Set on SIGTERM, when ``shutdown_deadline`` is known (open requests watch it)."""
        self.stop_error: str | None = None
        self.last_heartbeat_error: str | None = None
        self.last_sweep_error: str | None = None

    # -- phases ----------------------------------------------------------------------------

    @property
    def shutdown_deadline(self) -> float | None:
        """Event-loop time by which shutdown must be over (None until SIGTERM)."""
        return self._deadline

    @property
    def ready(self) -> bool:
        return self.phase is ReplicaPhase.READY

    @property
    def accepting(self) -> bool:
        """Whether requests that leave records may be served: from ``ready`` (when the
        recovery is done and the replay writer runs) until ``stopped``, draining included."""
        return self._became_ready and self.phase in (ReplicaPhase.READY, ReplicaPhase.DRAINING)

    async def _change(self, to_phase: ReplicaPhase, detail: str | None = None) -> bool:
        async with self._phase_lock:
            if not transition_allowed(self.phase, to_phase):
                return False
            now = utcnow()
            if self._registered:
                await self.storage.runtime.transition(self.id, to_phase, detail=detail, at=now)
            else:
                self._history.append(PhaseChange(self.phase, to_phase, now, detail))
            log.info("replica %s: %s -> %s", self.id, self.phase, to_phase)
            self.phase = to_phase
            return True

    async def _register(self) -> None:
        async with self._phase_lock:
            now = utcnow()
            record = ReplicaRecord(
                id=self.id,
                phase=self.phase,
                host=socket.gethostname(),
                pid=os.getpid(),
                listen=self.listen,
                version=__version__,
                started_at=self.started_at,
                heartbeat_at=now,
                updated_at=now,
            )
            await self.storage.runtime.register(record, self._history)
            self._registered = True
            self._history = []

    # -- startup ---------------------------------------------------------------------------

    def begin_startup(self) -> asyncio.Task[None]:
        """Run :meth:`start` in the background so the HTTP server answers meanwhile."""
        self._startup = asyncio.create_task(self._start_or_fail(), name=f"startup {self.id}")
        return self._startup

    async def _start_or_fail(self) -> None:
        try:
            await self.start()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            message = f"{exc.code}: {exc.message}" if isinstance(exc, StorageError) else None
            if message is None:
                message = exc.message if isinstance(exc, RoutekeeperError) else repr(exc)
            if not isinstance(exc, RoutekeeperError):
                log.exception("replica %s failed to start", self.id)
            await self.fail(f"startup failed: {message}")

    async def start(self) -> None:
        """starting -> migrating -> recovering -> ready, then the heartbeat runs.

        The liveness lock is taken before the replica's row exists, so a registered replica
        without its lock is dead or has lost the lock's session (see storage.runtime_recovery).
        ``prepare`` (loading what serving needs, e.g. embedding routing candidates) runs
        first, in ``starting``."""
        if self._prepare is not None:
            await self._prepare()
        await self.storage.open()
        await self.storage.liveness.acquire(self.id)
        self._lock_held = True
        self._healthy_since = asyncio.get_running_loop().time()
        await self._change(ReplicaPhase.MIGRATING)
        for state in await self.storage.migrate():
            if state.applied:
                log.info("backend %s migrated: %s", state.backend, ", ".join(state.applied))
        await self._register()
        await self._change(ReplicaPhase.RECOVERING)
        for report in await run_recovery(self._recovery_context()):
            log.info("recovery of %s: %s", report.surface, report.counts)
        await self._change(ReplicaPhase.READY)
        for component in self.components:
            component.begin()
        if self.board is not None:
            self.board.begin()
        self._became_ready = True
        self.became_ready.set()
        self._heartbeat = asyncio.create_task(self._beat(), name=f"heartbeat {self.id}")
        self._sweeper = asyncio.create_task(self._sweep_loop(), name=f"crash sweep {self.id}")
        self._pruner = asyncio.create_task(self._prune_loop(), name=f"retention {self.id}")

    def _recovery_context(self) -> RecoveryContext:
        healthy = 0.0
        if self._healthy_since is not None:
            healthy = asyncio.get_running_loop().time() - self._healthy_since
        return RecoveryContext(
            self.storage,
            self.id,
            stale_after_seconds=self.settings.runtime.stale_after_seconds,
            healthy_for_seconds=healthy,
        )

    async def fail(self, message: str) -> None:
        """Record a fatal error (best effort) and ask the server to exit non-zero."""
        self.error = message
        log.error("replica %s: %s", self.id, message)
        try:
            await self._change(ReplicaPhase.FAILED, detail=message[:2000])
        except Exception as exc:  # the failure itself must still reach the operator
            log.error("could not record the failure: %s", exc)
        self.phase = ReplicaPhase.FAILED
        if self.on_fatal is not None:
            self.on_fatal(message)

    # -- heartbeat and retention -----------------------------------------------------------

    async def _beat(self) -> None:
        """Every heartbeat_seconds: keep the liveness lock and store the heartbeat, within half
        the stale window. A heartbeat that fails or runs out of time makes storage
        ``degraded`` and unsettles this replica: it judges nobody until it has been settled
        for stale_after_seconds again (storage.runtime_recovery)."""
        runtime = self.settings.runtime
        budget = runtime.stale_after_seconds / 2
        while True:
            await asyncio.sleep(runtime.heartbeat_seconds)
            try:
                async with asyncio.timeout(budget):
                    if not await self._heartbeat_once():
                        return
            except IdentityTaken as exc:
                self._exit(
                    f"replica {self.id}: {exc.message}; exiting so that two processes do not "
                    "share one identity"
                )
                return
            except (StorageError, TimeoutError) as exc:
                self._beat_failed(str(exc) or f"no answer within {budget:g}s")
            except Exception as exc:  # the heartbeat must outlive any one bad beat
                log.exception("replica %s: heartbeat failed", self.id)
                self._beat_failed(repr(exc))

    async def _sweep_loop(self) -> None:
        """Every heartbeat_seconds, beside the heartbeat (a slow sweep never delays one):
        record crashed replicas. A failed sweep is logged; it says nothing about this
        replica's own health."""
        runtime = self.settings.runtime
        budget = runtime.stale_after_seconds / 2
        while True:
            await asyncio.sleep(runtime.heartbeat_seconds)
            try:
                async with asyncio.timeout(budget):
                    await self._sweep()
                self.last_sweep_error = None
            except (StorageError, TimeoutError) as exc:
                reason = str(exc) or f"no answer within {budget:g}s"
                if self.last_sweep_error is None:
                    log.warning("replica %s: crash sweep failed: %s", self.id, reason)
                self.last_sweep_error = reason
            except Exception:
                log.exception("replica %s: crash sweep failed", self.id)

    def _beat_failed(self, reason: str) -> None:
        if self.last_heartbeat_error is None:
            log.warning("replica %s: heartbeat not stored: %s", self.id, reason)
        self.last_heartbeat_error = reason
        self._healthy_since = None

    async def _heartbeat_once(self) -> bool:
        """Keep the lock, store the heartbeat; False when this replica was fenced and must
        stop. A lost lock session is taken again, never a reason to stop by itself."""
        lock_error: StorageError | None = None
        try:
            check: LockCheck | None = await self.storage.liveness.ensure_held(
                answer_within=self.settings.runtime.stale_after_seconds / 4
            )
        except IdentityTaken:
            raise
        except StorageError as exc:  # not taken again yet: the heartbeat still counts
            lock_error, check = exc, None
        if check is not LockCheck.HELD:
            self._healthy_since = None
        if not await self.storage.runtime.heartbeat(self.id):
            await self._fenced()
            return False
        if lock_error is not None:
            raise StorageError(f"liveness lock not held: {lock_error.message}")
        if self.last_heartbeat_error:
            log.info("replica %s: heartbeat stored again", self.id)
        self.last_heartbeat_error = None
        if check is not LockCheck.PENDING and self._healthy_since is None:
            self._healthy_since = asyncio.get_running_loop().time()
        return True

    async def _sweep(self) -> None:
        await sweep(self._recovery_context())

    async def _prune_loop(self) -> None:
        """Retention at start and every 10 minutes, beside the heartbeat (a long prune must
        never delay a heartbeat)."""
        while True:
            try:
                async with asyncio.timeout(PRUNE_EVERY_SECONDS / 2):
                    await self.prune()
            except (StorageError, TimeoutError) as exc:
                log.warning("replica %s: retention failed: %s", self.id, exc or "timed out")
            except Exception:
                log.exception("replica %s: retention failed", self.id)
            await asyncio.sleep(PRUNE_EVERY_SECONDS)

    async def _fenced(self) -> None:
        """Another replica declared this one crashed (it was hung or cut off for longer than
        stale_after_seconds). Whatever it owned may already be someone else's: stop."""
        record = await self.storage.runtime.get(self.id, upkeep=True)
        self.phase = record.phase
        self._exit(
            f"replica {self.id} was declared {record.phase} ({record.detail}); exiting so its "
            "work is not done twice"
        )

    def _exit(self, message: str) -> None:
        self.error = message
        self._healthy_since = None  # a replica on its way out judges nobody
        log.error(message)
        if self.on_fatal is not None:
            self.on_fatal(message)

    async def prune(self) -> dict[str, int]:
        """Apply every surface's retention, in batches; returns rows removed by surface."""
        return await apply_retention(self.storage, self.settings)

    # -- shutdown --------------------------------------------------------------------------

    async def drain(self) -> None:
        """Stop being ready (SIGTERM): /readyz turns 503 while requests finish. Starts the
        shutdown budget (server.graceful_timeout_seconds) that bounds every write from here."""
        loop = asyncio.get_running_loop()
        if self._deadline is None:
            self._deadline = loop.time() + self.settings.server.graceful_timeout_seconds
            self.shutting_down.set()
        if self._startup is not None and not self._startup.done():
            await self._bounded(cancel_and_wait(self._startup), "cancel startup")
        if self.phase.terminal or self.phase is ReplicaPhase.DRAINING:
            return
        if not await self._bounded(self._change(ReplicaPhase.DRAINING), "record draining"):
            self.phase = ReplicaPhase.DRAINING

    async def stop(self) -> None:
        """Finish within the shutdown budget: draining -> stopped, heartbeat stopped, liveness
        lock released, storage closed. A write that fails or runs out of time is logged and
        kept in ``stop_error`` (serve then exits non-zero); the rest still happens."""
        await self.drain()
        for task, what in (
            (self._heartbeat, "stop the heartbeat"),
            (self._sweeper, "stop the crash sweep"),
            (self._pruner, "stop retention"),
        ):
            if task is not None:
                await self._bounded(cancel_and_wait(task), what)
        stopped = not self._registered
        try:
            for component in self.components:
                await self._bounded(component.stop(), f"stop the {component.surface} component")
            if self.board is not None:
                await self._bounded(self.board.stop(), "publish to the worker board")
            if self._registered:
                stopped = await self._bounded(self._change(ReplicaPhase.STOPPED), "record stopped")
            if not self.phase.terminal:
                self.phase = ReplicaPhase.STOPPED
        finally:
            # The lock goes last: while the row says live, the lock says so too (and when
            # `stopped` could not be stored, a flock's file stays behind, free, for the sweep).
            if self._lock_held:
                await self._bounded(
                    self.storage.liveness.release(stopped=stopped), "release the liveness lock"
                )
                self._lock_held = False
            await self._bounded(self.storage.close(), "close storage")

    async def _bounded(self, awaitable: Awaitable[object], what: str) -> bool:
        """Await within what is left of the shutdown budget; False (and ``stop_error`` set)
        when it failed or ran out of time."""
        loop = asyncio.get_running_loop()
        deadline = self._deadline or loop.time() + self.settings.server.graceful_timeout_seconds
        try:
            async with asyncio.timeout(max(0.05, deadline - loop.time())):
                await awaitable
            return True
        except TimeoutError:
            message = f"could not {what} within server.graceful_timeout_seconds"
        except Exception as exc:  # shutdown must go on whatever one step raised
            message = f"could not {what}: {exc}"
        log.error("replica %s: %s", self.id, message)
        self.stop_error = self.stop_error or message
        return False
