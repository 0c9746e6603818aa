"""What a kind gets while its runner holds the job's lease (the ``JobRun`` of ``kinds``):
every write carries the runner's fence (owner and attempt) and is refused, changing
nothing, once the lease is lost."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.engine import Connection

from routekeeper.contract.jobs import JobCancelled, JobFence, JobRecord, JobStatus
from routekeeper.router.services.chat import ChatService
from routekeeper.routing.engine import RoutingEngine
from routekeeper.storage.jobs_store import JobsStore
from routekeeper.storage.state import StateStorage

T = TypeVar("T")


class LeasedJob:
    """One attempt of one job, as its kind sees it."""

    def __init__(
        self,
        record: JobRecord,
        fence: JobFence,
        *,
        storage: StateStorage,
        routing: RoutingEngine,
        chat: ChatService,
    ) -> None:
        self.id = record.id
        self.tenant_id = record.tenant_id
        self.attempt = record.attempt
        self.input: dict[str, Any] = record.input
        self.checkpoint: dict[str, Any] | None = record.checkpoint
        self.routing = routing
        self.chat = chat
        self.storage = storage
        self.fence = fence
        self.store = storage.store(JobsStore)
        self.cancel_requested = False

    def _seen(self, status: JobStatus) -> None:
        if status is JobStatus.CANCELLING:
            self.cancel_requested = True
            raise JobCancelled(f"job {self.id}: cancel requested")

    async def progress(
        self, done: int, total: int | None, unit: str, message: str | None = None
    ) -> None:
        self.check_cancelled()
        self._seen(await self.store.progress(self.fence, done, total, unit, message))

    async def save_checkpoint(self, checkpoint: dict[str, Any], *, done: int | None = None) -> None:
        self.check_cancelled()
        self._seen(await self.store.save_checkpoint(self.fence, checkpoint, done))
        self.checkpoint = checkpoint

    async def run_fenced(self, fn: Callable[[Connection], T]) -> T:
        """``fn(conn)`` in a fenced write transaction, without blocking the event loop."""
        return await self.store.run_fenced(self.fence, lambda conn, _job: fn(conn))

    def check_cancelled(self) -> None:
        if self.cancel_requested:
            raise JobCancelled(f"job {self.id}: cancel requested")
