"""The status snapshot behind ``GET /api/status`` and ``routekeeper status``."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from routekeeper.contract.errors import StorageError
from routekeeper.contract.runtime import ReplicaPhase, ReplicaRecord
from routekeeper.runtime.replica import ReplicaRuntime
from routekeeper.storage.state import SurfaceCount
from routekeeper.storage.types import utcnow

STATUS_REPLICA_LIMIT = 20
STATUS_LIVE_LIMIT = 100


@dataclass
class StatusSnapshot:
    replica_id: str
    phase: str
    mode: str
    replicas: list[ReplicaRecord]
    replicas_more: bool
    surfaces: list[SurfaceCount]
    errors: list[str] = field(default_factory=list)
    components: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Surface name -> what this replica's component of it reports."""
    workers: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    """Surface name -> replica id -> what that replica's component reports, for every worker
    of this ``serve`` (this replica alone when it runs without workers); each with ``as_of``,
    the time of the figures (another worker's are as of its last publication)."""


async def status_snapshot(runtime: ReplicaRuntime) -> StatusSnapshot:
    """The newest replicas, every live one (up to 100) and this one included, and every
    surface with its row count.
    A backend that cannot be read shows up in ``errors`` instead of failing the snapshot."""
    errors: list[str] = []
    replicas: list[ReplicaRecord] = []
    more = False
    storage = runtime.storage
    if runtime.ready or runtime.phase.terminal or runtime.phase.value == "draining":
        try:
            page = await storage.runtime.list_replicas(limit=STATUS_REPLICA_LIMIT)
            replicas, more = list(page.data), page.has_more
            if more:  # every live replica (e.g. each worker of a serve) is listed
                live = await storage.runtime.list_replicas(
                    limit=STATUS_LIVE_LIMIT, phases=[p for p in ReplicaPhase if not p.terminal]
                )
                shown = {r.id for r in replicas}
                replicas += [r for r in live.data if r.id not in shown]
                replicas.sort(key=lambda r: r.id, reverse=True)
            if all(r.id != runtime.id for r in replicas):
                replicas.insert(0, await storage.runtime.get(runtime.id))
        except StorageError as exc:
            errors.append(f"replicas: {exc.message}")
        surfaces = await storage.count_surface_rows()
        errors.extend(f"surface {s.placement.surface.name}: {s.error}" for s in surfaces if s.error)
    else:
        surfaces = [SurfaceCount(p, None, "not ready") for p in storage.placements]
    components = {c.surface: c.status() for c in runtime.components}
    now = utcnow().isoformat()
    workers: dict[str, dict[str, dict[str, Any]]] = {
        surface: {runtime.id: {**report, "as_of": now}} for surface, report in components.items()
    }
    if runtime.board is not None:
        for entry in runtime.board.others():
            as_of = datetime.fromtimestamp(entry["as_of"], UTC).isoformat()
            for surface, report in entry["components"].items():
                workers.setdefault(surface, {})[entry["replica_id"]] = {**report, "as_of": as_of}
    return StatusSnapshot(
        replica_id=runtime.id,
        phase=runtime.phase.value,
        mode=runtime.settings.state.mode,
        replicas=replicas,
        replicas_more=more,
        surfaces=surfaces,
        errors=errors,
        components=components,
        workers=workers,
    )
