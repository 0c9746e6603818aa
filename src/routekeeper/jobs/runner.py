"""The job slots of one replica (a ``serve`` process or a ``routekeeper worker``): each slot
claims the oldest queued job under this replica's lease, runs its kind, renews the lease
every ``jobs.heartbeat_seconds`` and finishes the job, every write fenced by owner and
attempt.

Cancellation: a heartbeat that finds ``cancelling`` (or a cancel committed in this process)
cancels the kind's task, which cancels an upstream call in flight, and commits ``cancelled``
once the task has ended, so no item reaches a model after it. A lost lease (another attempt
owns the job now) cancels the task and writes nothing. A replica that stops gracefully hands
its running jobs back (``queued`` at once, the attempt not counted against
``jobs.max_attempts``); one that dies leaves them to recovery, which requeues them as soon as
it is no longer live or its lease expired."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from routekeeper.contract.errors import StorageError
from routekeeper.contract.jobs import (
    JobCancelled,
    JobFailed,
    JobFence,
    JobRecord,
    JobStatus,
    LeaseLost,
)
from routekeeper.jobs.kinds import JobKind
from routekeeper.jobs.leased import LeasedJob
from routekeeper.jobs.snapshot import routing_hash, routing_snapshot, settings_for
from routekeeper.jobs.wakeups import JobWakeups
from routekeeper.router.services.chat import ChatService
from routekeeper.routing.engine import RoutingEngine, build_embedder
from routekeeper.settings import Settings
from routekeeper.storage.jobs_store import JobsStore
from routekeeper.storage.state import StateStorage
from routekeeper.tasks import cancel_and_wait
from routekeeper.upstream.openai import UpstreamPool

log = logging.getLogger(__name__)

CLAIM_BACKOFF_SECONDS = 1.0


class JobRunner:
    """The ``jobs`` component of a replica: its job slots, the wake-ups, the job gauges."""

    surface = "jobs"

    def __init__(
        self,
        settings: Settings,
        storage: StateStorage,
        kinds: Mapping[str, JobKind],
        *,
        owner: str,
        engine: RoutingEngine,
        chat: ChatService,
        pool: UpstreamPool,
        wakeups: JobWakeups,
        concurrency: int | None = None,
    ) -> None:
        self.settings = settings
        self.jobs = settings.jobs
        self.storage = storage
        self.store = storage.store(JobsStore)
        self.kinds = dict(kinds)
        self.owner = owner
        self.wakeups = wakeups
        self.concurrency = self.jobs.concurrency if concurrency is None else concurrency
        self._pool = pool
        self._current_hash = routing_hash(routing_snapshot(settings))
        self._engines: dict[str, tuple[RoutingEngine, ChatService]] = {
            self._current_hash: (engine, chat)
        }
        self._own_engines: list[RoutingEngine] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.running: dict[str, LeasedJob] = {}
        self._work: dict[str, asyncio.Task[dict[str, Any]]] = {}
        self.finished = 0
        self.counts: dict[JobStatus, int] = {}
        self.last_error: str | None = None

    # -- component -------------------------------------------------------------------------

    def begin(self) -> None:
        self.wakeups.begin()
        self._tasks.append(asyncio.create_task(self._count_loop(), name="job gauges"))
        for n in range(self.concurrency):
            self._tasks.append(asyncio.create_task(self._slot(), name=f"job slot {n}"))

    async def stop(self) -> None:
        """Stop the slots; jobs running here are handed back (queued at once, the attempt
        not counted), so another replica takes them over from their checkpoint."""
        leased = [job.fence for job in self.running.values()]
        await cancel_and_wait(*self._tasks)  # together: each is asked once
        self._tasks = []
        for fence in leased:
            try:
                await self.store.hand_back(fence)
            except (LeaseLost, StorageError) as exc:  # recovery requeues it instead
                log.warning("job %s not handed back: %s", fence.job_id, exc)
        await self.wakeups.stop()
        for engine in self._own_engines:
            with contextlib.suppress(Exception):
                await engine.aclose()

    def status(self) -> dict[str, Any]:
        return {
            "slots": self.concurrency,
            "running": sorted(self.running),
            "finished_here": self.finished,
            "wakeups": self.wakeups.channel,
            "wakeups_connected": self.wakeups.connected,
            "kinds": sorted(self.kinds),
            "last_error": self.last_error,
        }

    def metrics(self) -> Iterable[Metric]:
        for status, name in ((JobStatus.QUEUED, "queued"), (JobStatus.RUNNING, "running")):
            gauge = GaugeMetricFamily(
                f"routekeeper_jobs_{name}", f"Jobs {name} now (every tenant, every replica)."
            )
            gauge.add_metric([], self.counts.get(status, 0))
            yield gauge
        c = self.store.counters
        for name, value, text in (
            ("lease_expiries", c.lease_expiries, "Jobs requeued because their lease expired"),
            ("owner_crashes", c.owner_crashes, "Jobs requeued because their owner crashed"),
            ("crashes", c.crashed, "Jobs that ended crashed after jobs.max_attempts"),
        ):
            counter = CounterMetricFamily(
                f"routekeeper_job_{name}", f"{text} (found by this replica's recovery)."
            )
            counter.add_metric([], value)
            yield counter

    async def _count_loop(self) -> None:
        while True:
            try:
                self.counts = await self.store.status_counts()
            except StorageError as exc:
                self.last_error = str(exc)
            await asyncio.sleep(self.jobs.heartbeat_seconds)

    # -- slots -----------------------------------------------------------------------------

    async def _slot(self) -> None:
        with self.wakeups.idle() as wake:
            while True:
                wake.clear()
                try:
                    record = await self.store.claim(
                        self.owner, self.jobs.lease_seconds, list(self.kinds)
                    )
                except StorageError as exc:
                    self.last_error = f"claim: {exc}"
                    await asyncio.sleep(CLAIM_BACKOFF_SECONDS)
                    continue
                if record is None:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.jobs.poll_ms / 1000):
                            await wake.wait()
                    continue
                try:
                    await self.run(record)
                except asyncio.CancelledError:
                    raise
                except Exception:  # one job's failure must not end the slot
                    log.exception("job %s: the runner failed", record.id)

    async def _routing_for(self, record: JobRecord) -> tuple[RoutingEngine, ChatService]:
        found = self._engines.get(record.routing_hash)
        if found is None:
            pinned = settings_for(self.settings, record.routing_config)
            engine = RoutingEngine(pinned, build_embedder(pinned))
            await engine.prepare()
            self._own_engines.append(engine)
            found = self._engines[record.routing_hash] = (
                engine,
                ChatService(pinned, engine, self._pool),
            )
        return found

    async def run(self, record: JobRecord) -> None:
        """Run one claimed job to its end (or until its lease is lost)."""
        fence = JobFence(record.id, self.owner, record.attempt)
        kind = self.kinds[record.kind]
        try:
            routing, chat = await self._routing_for(record)
        except Exception as exc:
            await self._finish(fence, JobStatus.FAILED, error=f"routing snapshot: {exc}")
            return
        job = LeasedJob(record, fence, storage=self.storage, routing=routing, chat=chat)
        self.running[record.id] = job
        work = asyncio.create_task(kind.run(job), name=f"job {record.id}")
        self._work[record.id] = work
        try:
            lost = await self._watch(job, work)
        finally:
            self.running.pop(record.id, None)
            self._work.pop(record.id, None)
            if not work.done():
                work.cancel()
            with contextlib.suppress(BaseException):
                await work
        if lost:
            return
        if work.cancelled() or job.cancel_requested:
            await self._finish(fence, JobStatus.CANCELLED)
            return
        error = work.exception()
        if error is None:
            await self._finish(fence, JobStatus.SUCCEEDED, result=work.result())
        elif isinstance(error, JobCancelled):
            await self._finish(fence, JobStatus.CANCELLED)
        elif isinstance(error, LeaseLost):
            log.warning("job %s: %s", record.id, error)
        elif isinstance(error, JobFailed):
            await self._finish(fence, JobStatus.FAILED, error=error.message)
        elif isinstance(error, StorageError):
            # The database failed under it: the lease runs out and the job is requeued.
            log.warning("job %s: storage failed: %s", record.id, error)
        else:
            log.error("job %s failed", record.id, exc_info=error)
            text = f"{type(error).__name__}: {error}"
            await self._finish(fence, JobStatus.FAILED, error=text)

    async def _watch(self, job: LeasedJob, work: asyncio.Task[Any]) -> bool:
        """Renew the lease every heartbeat until ``work`` ends; cancel it when the job is
        ``cancelling`` (True: the lease was lost, the job is someone else's now)."""
        beat = self.jobs.heartbeat_seconds
        loop = asyncio.get_running_loop()
        renewed = loop.time()
        while True:
            done, _ = await asyncio.wait([work], timeout=beat)
            if done:
                return False
            try:
                status = await self.store.heartbeat(job.fence, self.jobs.lease_seconds)
            except LeaseLost as exc:
                log.warning("job %s: %s", job.id, exc.message)
                work.cancel()
                return True
            except StorageError as exc:
                self.last_error = f"heartbeat {job.id}: {exc}"
                if loop.time() - renewed < self.jobs.lease_seconds:
                    continue  # the lease may still hold: try again next beat
                # It has run out: another replica may take the job over, so stop working.
                log.warning("job %s: lease not renewed for jobs.lease_seconds", job.id)
                work.cancel()
                return True
            renewed = loop.time()
            if status is JobStatus.CANCELLING:
                self.cancel_here(job.id)

    def cancel_here(self, job_id: str) -> bool:
        """Stop the job if it runs in this process (its cancel was committed): its task is
        cancelled now and the slot commits ``cancelled`` once it has ended."""
        job = self.running.get(job_id)
        if job is None or job.cancel_requested:
            return job is not None
        job.cancel_requested = True
        task = self._work.get(job_id)
        if task is not None:
            task.cancel()
        return True

    async def _finish(
        self,
        fence: JobFence,
        status: JobStatus,
        *,
        result: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        try:
            await self.store.finish(fence, status, result=result, error=error)
            self.finished += 1
        except LeaseLost as exc:
            log.warning("job %s: not finished here: %s", fence.job_id, exc.message)
        except StorageError as exc:
            self.last_error = f"finish {fence.job_id}: {exc}"
            log.warning("job %s: not finished: %s", fence.job_id, exc)
