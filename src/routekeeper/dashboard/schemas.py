"""Response models of the dashboard API (records stay dataclasses below this layer)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any, Self

from pydantic import BaseModel, Field

from routekeeper.contract.replay import ReplayRecord
from routekeeper.contract.runtime import ReplicaRecord, RuntimeEvent


class ReplicaOut(BaseModel):
    id: str
    phase: str
    host: str
    pid: int
    listen: str | None
    version: str
    started_at: datetime
    heartbeat_at: datetime
    updated_at: datetime
    stopped_at: datetime | None
    detail: str | None
    current: bool = Field(description="True for the replica that answered this request.")

    @classmethod
    def of(cls, record: ReplicaRecord, current_id: str) -> ReplicaOut:
        return cls(
            id=record.id,
            phase=record.phase.value,
            host=record.host,
            pid=record.pid,
            listen=record.listen,
            version=record.version,
            started_at=record.started_at,
            heartbeat_at=record.heartbeat_at,
            updated_at=record.updated_at,
            stopped_at=record.stopped_at,
            detail=record.detail,
            current=record.id == current_id,
        )


class SurfaceOut(BaseModel):
    name: str
    owner: str
    class_: str = Field(alias="class", serialization_alias="class")
    durable: bool
    shared: bool
    backend: str
    backend_type: str
    location: str
    ephemeral: bool
    rows: int | None
    error: str | None = None
    restart_expectation: str
    recovery: str
    component: dict[str, Any] | None = Field(
        None,
        description="What this replica's background component of the surface reports now "
        "(router_replay: the writer's `queued` (accepted, not committed yet), `written`, `batches` "
        "(transactions; written / "
        "batches is writes per commit), `dropped` by reason, `durability`, `ack_timeout` "
        "(answers sent before their record was known committed) and `storage` (`ok`, or "
        "`degraded` while writes fail and records wait)); null when it has none.",
    )
    workers: dict[str, dict[str, Any]] | None = Field(
        None,
        description="The same report for every worker of this `serve` (`--workers N`), by "
        "replica id, each with `as_of` (another worker's figures are as of its last "
        "publication, at most a fraction of a second old); without workers, this replica "
        "alone. Counters are per process: add them up across workers for totals. Null when "
        "the surface has no component.",
    )

    model_config = {"populate_by_name": True}


class StatusOut(BaseModel):
    replica_id: str = Field(description="The replica that answered.")
    phase: str
    mode: str
    replicas: list[ReplicaOut]
    replicas_has_more: bool
    surfaces: list[SurfaceOut]
    errors: list[str]


class RuntimeEventOut(BaseModel):
    id: int
    replica_id: str
    kind: str
    from_phase: str | None
    to_phase: str | None
    data: dict[str, Any]
    occurred_at: datetime | None

    @classmethod
    def of(cls, event: RuntimeEvent) -> RuntimeEventOut:
        return cls(
            id=event.id,
            replica_id=event.replica_id,
            kind=event.kind.value,
            from_phase=event.from_phase.value if event.from_phase else None,
            to_phase=event.to_phase.value if event.to_phase else None,
            data=event.data,
            occurred_at=event.occurred_at,
        )


class ReplaySummaryOut(BaseModel):
    """A replay record in a list (``GET /api/replay``, a session): every field but the
    captured content. The bodies, their ``*_truncated`` flags and ``prompt_text`` are only on
    ``GET /api/replay/{id}`` (:class:`ReplayOut`), where they can be read."""

    id: str
    request_id: str
    replica_id: str
    tenant: str = Field(description="The tenant of the key the request was made with.")
    key_id: str | None = Field(
        None, description="The API key the request was made with (null with auth off)."
    )
    endpoint: str
    session_id: str | None
    decision: str | None
    signals: dict[str, list[dict[str, Any]]]
    requested_model: str
    selected_model: str | None
    stream: bool
    upstream_status: int | None
    lifecycle_state: str
    terminal_reason: str | None
    started_at: datetime
    completed_at: datetime | None
    routing_ms: float | None
    ttfb_ms: float | None
    total_ms: float | None
    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None
    cost: float | None
    currency: str | None
    error: str | None
    response_id: str | None = Field(
        None, description="The response a /v1/responses request created (stored or not)."
    )

    @classmethod
    def of(cls, record: ReplayRecord) -> Self:
        data = asdict(record)
        data["tenant"] = record.tenant_id
        data["lifecycle_state"] = str(record.lifecycle_state)
        data["terminal_reason"] = str(record.terminal_reason) if record.terminal_reason else None
        return cls(**{k: v for k, v in data.items() if k in cls.model_fields})


class ReplayOut(ReplaySummaryOut):
    """One whole replay record: the summary plus what its decision captured (``null`` bodies
    when nothing was captured)."""

    request_body: str | None
    request_body_truncated: bool
    response_body: str | None
    response_body_truncated: bool
    prompt_text: str | None
