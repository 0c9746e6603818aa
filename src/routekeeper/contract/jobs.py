"""Durable workflow jobs: a job (its kind, validated input, the routing configuration it was
submitted under, lease, checkpoint, progress, result) and its typed events, numbered 1, 2,
3, ... per job under the job's row lock, so a reader resuming after event N never skips one.

Every move of a job goes through :data:`JOB_LIFECYCLE` and appends its event in the same
transaction; progress and checkpoints are typed writes, never parsed output.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from routekeeper.contract.classes import StateClass
from routekeeper.contract.errors import InvalidRequest, RoutekeeperError
from routekeeper.contract.lifecycle import Lifecycle
from routekeeper.contract.surface import Owner, Retention, Surface, WriteMode, Writes


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    CRASHED = "crashed"


JOB_LIFECYCLE = Lifecycle.of(
    "job",
    JobStatus,
    JobStatus.QUEUED,
    {
        # Claimed by a runner, or cancelled before any runner took it.
        JobStatus.QUEUED: {JobStatus.RUNNING, JobStatus.CANCELLED},
        # Finished by its runner; a cancel request; requeued when its lease expired or its
        # owner crashed (or crashed for good after jobs.max_attempts).
        JobStatus.RUNNING: {
            JobStatus.SUCCEEDED,
            JobStatus.FAILED,
            JobStatus.CANCELLING,
            JobStatus.QUEUED,
            JobStatus.CRASHED,
        },
        # The runner (or, when it is gone, recovery) commits the cancel.
        JobStatus.CANCELLING: {JobStatus.CANCELLED},
        JobStatus.SUCCEEDED: (),
        # Retry: the same job, attempt + 1, from its last checkpoint.
        JobStatus.FAILED: {JobStatus.QUEUED},
        JobStatus.CANCELLED: {JobStatus.QUEUED},
        JobStatus.CRASHED: {JobStatus.QUEUED},
    },
)

FINISHED = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.CRASHED}
)
"""A job in one of these holds no lease and runs nowhere (its stream ends); all but
``succeeded`` may be retried."""
RETRYABLE = frozenset({JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.CRASHED})
LEASED = frozenset({JobStatus.RUNNING, JobStatus.CANCELLING})
"""A job in one of these has a lease owner that must keep renewing it."""


class JobEventKind(enum.StrEnum):
    SUBMITTED = "job.submitted"
    """data: kind, max_attempts, routing_hash."""
    STARTED = "job.started"
    """A runner claimed it; data: attempt, owner, resumed (from a checkpoint)."""
    PROGRESS = "job.progress"
    """data: done, total, unit, message."""
    CHECKPOINT = "job.checkpoint"
    """A checkpoint was saved; data: done (the checkpoint itself is on the job)."""
    CANCEL_REQUESTED = "job.cancel_requested"
    REQUEUED = "job.requeued"
    """Its lease expired or its owner crashed; data: attempt, reason, owner."""
    RETRIED = "job.retried"
    """A client retried a finished job; data: attempt (the last one), from_status."""
    SUCCEEDED = "job.succeeded"
    FAILED = "job.failed"
    """data: error."""
    CANCELLED = "job.cancelled"
    CRASHED = "job.crashed"
    """It ran out of attempts (jobs.max_attempts); data: attempt, reason."""


class RequeueReason(enum.StrEnum):
    LEASE_EXPIRED = "lease_expired"
    OWNER_CRASHED = "owner_crashed"
    """Its owner is not live (recorded crashed, or gone without releasing it)."""
    OWNER_STOPPED = "owner_stopped"
    """Its owner stopped gracefully and handed it back; the attempt is not counted against
    max_attempts."""


@dataclass(frozen=True)
class JobProgress:
    done: int = 0
    total: int | None = None
    unit: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class JobRecord:
    """One job. ``attempt`` counts the runs so far (0 until first claimed);
    ``budget_start`` is the attempt its current budget of ``max_attempts`` started after (0,
    or the attempt a retry left off at). ``next_event`` is the number its next event takes."""

    id: str
    tenant_id: str
    kind: str
    status: JobStatus
    params: dict[str, Any]
    input: dict[str, Any]
    routing_config: dict[str, Any]
    routing_hash: str
    attempt: int
    max_attempts: int
    budget_start: int
    created_at: datetime
    updated_at: datetime
    next_event: int = 1
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    heartbeat_at: datetime | None = None
    checkpoint: dict[str, Any] | None = None
    progress_done: int = 0
    progress_total: int | None = None
    progress_unit: str | None = None
    progress_message: str | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def progress(self) -> JobProgress:
        return JobProgress(
            self.progress_done, self.progress_total, self.progress_unit, self.progress_message
        )


@dataclass(frozen=True)
class JobEventRecord:
    """One event of a job: ``seq`` is its number within the job (1, 2, 3, ...), its SSE id."""

    id: int
    job_id: str
    tenant_id: str
    seq: int
    kind: JobEventKind
    status: JobStatus
    attempt: int
    occurred_at: datetime
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class JobFilters:
    """What ``GET /api/jobs`` selects. ``tenant_id`` None: every tenant (admin keys)."""

    tenant_id: str | None = "default"
    status: JobStatus | None = None
    kind: str | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class JobFence:
    """Who may write a job: its lease owner, in one attempt."""

    job_id: str
    owner: str
    attempt: int


class LeaseLost(RoutekeeperError):
    """A write of a runner that no longer holds the job's lease (another owner or attempt):
    refused, nothing changed."""

    code = "lease_lost"
    status = 409


class JobCancelled(RoutekeeperError):
    """A cancel was requested: the kind stops; the runner commits ``cancelled``."""

    code = "job_cancelled"
    status = 409


class JobFailed(RoutekeeperError):
    """A failure that retrying will not fix: the job ends ``failed`` with this message."""

    code = "job_failed"
    status = 500


class UnknownJobKind(InvalidRequest):
    def __init__(self, kind: str, known: list[str]) -> None:
        super().__init__(
            f"kind: unknown job kind {kind!r} (known: {', '.join(sorted(known)) or 'none'})",
            param="kind",
            details={
                "kind": kind,
                "known": sorted(known),
                "problems": [{"param": "kind", "message": "unknown job kind"}],
            },
        )


JOBS = Surface(
    name="jobs",
    owner=Owner.DASHBOARD,
    state_class=StateClass.SHARED_DURABLE_WORKFLOW_STATE,
    stores=(
        "One row per durable workflow job: kind, params and the normalized input, the routing "
        "configuration it was submitted under and its hash, status, attempt and max attempts, "
        "lease owner and expiry, heartbeat, checkpoint, progress, result and error."
    ),
    restart_expectation=(
        "Every job whose id a client received is there after SIGTERM and SIGKILL. A job "
        "running on a replica or worker that dies is requeued (at once when its owner is "
        "recorded crashed, else when its lease expires) and resumes from its last checkpoint "
        "with attempt + 1, or ends `crashed` after jobs.max_attempts."
    ),
    recovery=(
        "Jobs whose lease expired or whose owner is not live are requeued with their "
        "checkpoint (`cancelling` ones become `cancelled`; past jobs.max_attempts `crashed`); "
        "a job that is not running keeps no lease (at start, on every sweep, after a crash)."
    ),
    id_prefix="job",
    tenant_scoped=True,
    writes=Writes(WriteMode.ACKNOWLEDGED),
    retention=Retention(max_age_days="jobs.retention_days", applies_to="finished jobs"),
    lifecycle=JOB_LIFECYCLE,
    recovery_step=True,
)

JOB_EVENTS = Surface(
    name="job_events",
    owner=Owner.DASHBOARD,
    state_class=StateClass.AUDIT_ANALYTICS_TELEMETRY,
    stores=(
        "The typed events of each job (submitted, started, progress, checkpoint, cancel "
        "requested, requeued, retried, and how it ended), numbered 1, 2, 3, ... per job: the "
        "ids of its SSE stream. Deleted with their job (jobs.retention_days)."
    ),
    restart_expectation=(
        "Every event is committed with the change it describes, so after SIGTERM and SIGKILL "
        "a stream resumed with Last-Event-ID gets every later event exactly once."
    ),
    recovery=("Nothing of its own: the jobs recovery appends the events of what it repairs."),
    colocated_with="jobs",
    tenant_scoped=True,
    writes=Writes(WriteMode.ACKNOWLEDGED),
    retention=None,
)
"""Pruned with their job (a foreign key with ON DELETE CASCADE): jobs.retention_days."""
