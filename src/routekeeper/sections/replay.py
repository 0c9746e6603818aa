"""``replay``: the router_replay surface's settings."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from routekeeper.sections.base import Section


class ReplaySettings(Section):
    enabled: bool = Field(True, description="Record every /v1 request (router_replay).")
    retention_days: int = Field(30, ge=1, le=3650, description="Records older than this go.")
    max_records: int = Field(
        1_000_000, ge=1000, description="Beyond this many records the oldest go."
    )
    queue_max: int = Field(
        10_000, ge=10, le=10_000_000, description="Records waiting for the writer, at most."
    )
    flush_interval_ms: int = Field(
        100,
        ge=5,
        le=60_000,
        description="How often the writer stores what is queued (start records; every record "
        "in `batch` mode).",
    )
    durability: Literal["acknowledged", "batch"] = Field(
        "acknowledged",
        description="`acknowledged`: a response's last byte is sent only after its record is "
        "committed (group commit). `batch`: records are written every flush_interval_ms and a "
        "SIGKILL loses what finished since the last flush.",
    )
    ack_timeout_ms: int = Field(
        500,
        ge=1,
        le=60_000,
        description="`acknowledged` mode: wait at most this long for a record's commit, then "
        "answer anyway with `x-routekeeper-replay-durable: false` (counted as ack_timeout).",
    )
