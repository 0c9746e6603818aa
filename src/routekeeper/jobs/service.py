"""The jobs service the routes and the CLI use: submit (the kind validates the params, the
job is pinned to the routing configuration it was submitted under), read, list, events, the
event stream (resumable after any event number, across restarts and replicas), cancel and
retry. Every answer follows the commit it reports."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

from routekeeper.contract.errors import InvalidRequest
from routekeeper.contract.ids import new_id
from routekeeper.contract.jobs import (
    FINISHED,
    JobEventKind,
    JobEventRecord,
    JobFilters,
    JobRecord,
    JobStatus,
    UnknownJobKind,
)
from routekeeper.contract.pages import Page, SortOrder
from routekeeper.jobs.kinds import JobKind, SubmitContext
from routekeeper.jobs.runner import JobRunner
from routekeeper.jobs.snapshot import routing_hash, routing_snapshot
from routekeeper.jobs.wakeups import JobWakeups
from routekeeper.settings import Settings
from routekeeper.storage.jobs_store import JobsStore
from routekeeper.storage.state import StateStorage
from routekeeper.storage.types import utcnow

TERMINAL_EVENTS = frozenset(
    {JobEventKind.SUCCEEDED, JobEventKind.FAILED, JobEventKind.CANCELLED, JobEventKind.CRASHED}
)
STREAM_BATCH = 500


class JobsService:
    def __init__(
        self,
        settings: Settings,
        storage: StateStorage,
        kinds: Mapping[str, JobKind],
        wakeups: JobWakeups,
        runner: JobRunner | None = None,
        *,
        shutting_down: asyncio.Event | None = None,
    ) -> None:
        self.settings = settings
        self.store = storage.store(JobsStore)
        self.kinds = kinds
        self.wakeups = wakeups
        self.runner = runner
        self.shutting_down = shutting_down
        """Set when the replica drains: open streams end (their clients resume elsewhere
        with Last-Event-ID)."""

    async def submit(self, tenant_id: str, kind_name: str, params: dict[str, Any]) -> JobRecord:
        """Validate ``params`` with the kind (InvalidRequest naming the field) and store the
        queued job with its normalized input and routing snapshot."""
        kind = self.kinds.get(kind_name)
        if kind is None:
            raise UnknownJobKind(kind_name, list(self.kinds))
        if not isinstance(params, dict):
            raise _naming_its_param(InvalidRequest("must be a JSON object", param="params"))
        ctx = SubmitContext(tenant_id=tenant_id, dataset_dir=self.settings.dataset_dir)
        try:
            # On a worker thread: a kind may read a file here (an evaluation's dataset, up to
            # 64 MiB), which must not stall the loop's requests and heartbeats meanwhile.
            normalized = await asyncio.to_thread(kind.validate, params, ctx)
        except InvalidRequest as exc:
            raise _naming_its_param(exc) from None
        snapshot = routing_snapshot(self.settings)
        now = utcnow()
        job = JobRecord(
            id=new_id("job"),
            tenant_id=tenant_id,
            kind=kind_name,
            status=JobStatus.QUEUED,
            params=params,
            input=normalized,
            routing_config=snapshot,
            routing_hash=routing_hash(snapshot),
            attempt=0,
            max_attempts=self.settings.jobs.max_attempts,
            budget_start=0,
            created_at=now,
            updated_at=now,
        )
        return await self.store.submit(job)

    async def get(self, tenant_id: str | None, job_id: str) -> JobRecord:
        return await self.store.get(tenant_id, job_id)

    async def list(
        self,
        filters: JobFilters,
        *,
        limit: int,
        order: SortOrder,
        after: str | None,
        before: str | None,
    ) -> Page[JobRecord]:
        return await self.store.list_jobs(
            filters, limit=limit, order=order, after=after, before=before
        )

    async def events(
        self,
        tenant_id: str | None,
        job_id: str,
        *,
        limit: int,
        order: SortOrder,
        after: int | None,
        before: int | None,
    ) -> Page[JobEventRecord]:
        return await self.store.events(
            tenant_id, job_id, limit=limit, order=order, after=after, before=before
        )

    async def cancel(self, tenant_id: str | None, job_id: str) -> JobRecord:
        """Queued: ``cancelled`` now. Running: ``cancelling``, and its runner commits
        ``cancelled`` within ``jobs.heartbeat_seconds`` + 1 s (at once when it runs here)."""
        job = await self.store.cancel(tenant_id, job_id)
        if job.status is JobStatus.CANCELLING and self.runner is not None:
            self.runner.cancel_here(job_id)
        return job

    async def retry(self, tenant_id: str | None, job_id: str) -> JobRecord:
        return await self.store.retry(tenant_id, job_id)

    async def stream(
        self, tenant_id: str | None, job_id: str, after: int = 0
    ) -> AsyncIterator[JobEventRecord]:
        """Every event numbered above ``after``, in order, each once, as it is committed;
        ends after a terminal event that nothing follows (the job is finished), or when the
        replica drains. NotFound for an unknown job, before anything is yielded."""
        await self.store.get(tenant_id, job_id)
        return self._follow(tenant_id, job_id, after)

    async def _follow(
        self, tenant_id: str | None, job_id: str, after: int
    ) -> AsyncIterator[JobEventRecord]:
        last = after
        with self.wakeups.watch(job_id) as wake:
            while True:
                wake.clear()
                events = await self.store.events_after(tenant_id, job_id, last, limit=STREAM_BATCH)
                for event in events:
                    yield event
                    last = event.seq
                if len(events) == STREAM_BATCH:
                    continue
                if events and events[-1].kind in TERMINAL_EVENTS:
                    return
                if not events and last > 0:
                    job = await self.store.get(tenant_id, job_id)
                    if job.status in FINISHED and job.next_event - 1 <= last:
                        return
                if self.shutting_down is not None and self.shutting_down.is_set():
                    return
                await self._wait(wake)

    async def _wait(self, wake: asyncio.Event) -> None:
        """Until a wake-up, the replica's drain, or the poll period."""
        waits = [asyncio.ensure_future(wake.wait())]
        if self.shutting_down is not None:
            waits.append(asyncio.ensure_future(self.shutting_down.wait()))
        try:
            await asyncio.wait(
                waits, timeout=self.wakeups.poll_seconds, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for waiting in waits:
                waiting.cancel()


def _naming_its_param(exc: InvalidRequest) -> InvalidRequest:
    """The /api shape of a refused param: its message names it and ``details.problems``
    lists it (what a kind raised may carry only ``param``)."""
    param = exc.param
    if param is None or exc.details.get("problems"):
        return exc
    message = exc.message if param in exc.message else f"{param}: {exc.message}"
    details = {**exc.details, "problems": [{"param": param, "message": exc.message}]}
    return InvalidRequest(message, param=param, details=details, code=exc.code)
