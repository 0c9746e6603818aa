"""The job kind interface: what a kind of durable job implements, what the runner gives it
while it holds the lease, and the errors that pass between them.

A kind checks its params once, at submit (``validate``), and the normalized input it returns
is stored with the job: every attempt, on any replica or worker, runs from exactly that
input. ``run`` does the work from the last saved checkpoint (``None`` on a fresh start) and
returns the result. Progress and checkpoints are typed calls, never parsed output.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from routekeeper.contract.jobs import JobCancelled, JobFailed, LeaseLost

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from routekeeper.router.services.chat import ChatService
    from routekeeper.routing.engine import RoutingEngine
    from routekeeper.storage.state import StateStorage

T = TypeVar("T")

__all__ = [
    "JobCancelled",
    "JobFailed",
    "JobKind",
    "JobRun",
    "LeaseLost",
    "SubmitContext",
]


@dataclass(frozen=True)
class SubmitContext:
    """What a kind may consult while validating params at submit."""

    tenant_id: str
    dataset_dir: Path
    """``jobs.dataset_dir`` (default ``<workspace>/datasets``): where relative dataset paths
    resolve and which they may not leave."""


class JobRun(Protocol):
    """What the runner gives a kind while it holds the job's lease."""

    id: str
    tenant_id: str
    attempt: int
    input: dict[str, Any]
    """What ``validate()`` returned at submit."""
    checkpoint: dict[str, Any] | None
    """The last saved checkpoint (``None`` on a fresh start)."""
    routing: RoutingEngine
    """Built from the job's pinned routing-configuration snapshot."""
    chat: ChatService
    """Sends a chat body to a model (same snapshot)."""
    storage: StateStorage

    async def progress(
        self, done: int, total: int | None, unit: str, message: str | None = None
    ) -> None:
        """Stores the job's progress and appends a ``progress`` event (fenced: raises
        LeaseLost when this runner no longer holds the lease, JobCancelled when a cancel
        was requested)."""
        ...

    async def save_checkpoint(self, checkpoint: dict[str, Any], *, done: int | None = None) -> None:
        """Stores the checkpoint the next attempt resumes from (fenced, like progress);
        ``done`` updates the progress count in the same transaction."""
        ...

    def check_cancelled(self) -> None:
        """Raises JobCancelled when a cancel was requested."""
        ...

    async def run_fenced(self, fn: Callable[[Connection], T]) -> T:
        """``fn(conn)`` in a write transaction that first checks lease owner == this runner
        and attempt == this attempt (LeaseLost, nothing written, otherwise): a kind's own
        rows (per-item results) written by a plain function taking the sync Connection,
        without blocking the event loop. Returns what ``fn`` returns."""
        ...


class JobKind(Protocol):
    name: str
    """The kind's name, as submitted in ``kind`` (e.g. ``"evaluation"``)."""

    def validate(self, params: dict[str, Any], ctx: SubmitContext) -> dict[str, Any]:
        """Checks params at submit (raise contract InvalidRequest with param= naming the bad
        field/index, e.g. "params.dataset[3].prompt"); returns the normalized input stored
        with the job (every attempt and every worker sees exactly it). Runs on a worker
        thread, not the event loop's (it may read files), so it must not use the loop."""
        ...

    async def run(self, job: JobRun) -> dict[str, Any]:
        """Does the work from job.checkpoint (None on a fresh start); returns the result.
        Raises JobFailed(message) for a failure that retrying won't fix."""
        ...
