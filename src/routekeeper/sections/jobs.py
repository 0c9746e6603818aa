"""``jobs``: durable workflow jobs: the job slots of each process, leases and retention."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from routekeeper.sections.base import Section


class JobsSettings(Section):
    concurrency: int = Field(
        1,
        ge=0,
        le=256,
        description="Job slots in each `serve` process (jobs it runs at once); 0: this "
        "process runs no jobs (a `routekeeper worker` may). `worker --concurrency` overrides "
        "it for a worker.",
    )
    heartbeat_seconds: float = Field(
        2.0,
        gt=0,
        le=3600,
        description="A running job renews its lease this often; a cancel reaches `cancelled` "
        "within this plus 1 s.",
    )
    lease_seconds: float = Field(
        15.0,
        gt=0,
        le=86400,
        description="A running job's lease: one not renewed for this long is requeued (attempt "
        "+ 1, from the last checkpoint) by any replica.",
    )
    max_attempts: int = Field(
        3,
        ge=1,
        le=100,
        description="Runs a job gets (a lease expiry or a crashed owner uses one) before it "
        "ends `crashed`; a retry gives it this many again.",
    )
    retention_days: int = Field(
        30,
        ge=1,
        le=3650,
        description="Finished jobs (succeeded, failed, cancelled, crashed) older than this go, "
        "with their events and results, in batches.",
    )
    dataset_dir: Path | None = Field(
        None,
        description="Where server-side datasets (`params.dataset_path`) are read from; "
        "relative paths may not leave it. Default: `<workspace>/datasets`.",
    )
    poll_ms: int = Field(
        500,
        ge=10,
        le=60000,
        description="An idle job slot looks for queued jobs this often (a job submitted to "
        "this process wakes it at once).",
    )

    @model_validator(mode="after")
    def _lease_outlives_heartbeats(self) -> JobsSettings:
        if self.lease_seconds < 2 * self.heartbeat_seconds:
            raise ValueError(
                "@lease_seconds: must be at least twice heartbeat_seconds "
                f"({self.heartbeat_seconds}), or running jobs would lose their lease"
            )
        return self
