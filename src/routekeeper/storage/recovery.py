"""Recovery: what startup does about state a crash left behind, surface by surface.

Each store hands its surfaces' :class:`RecoveryStep` objects (``SurfaceStore.recovery_steps``).
``serve`` runs them all in the ``recovering`` phase, before ``/readyz`` turns 200, and records
one ``recovery.completed`` event per step with the counts it found. Steps marked ``periodic``
run again on every crash sweep; when one of them records a replica crashed, the steps marked
``after_crash`` run too (what the dead replica owned). ``routekeeper doctor`` runs every step
with ``dry_run=True``: they report what they would fix and change nothing. Steps are
idempotent: running one twice fixes nothing the second time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from routekeeper.contract import SURFACES
from routekeeper.contract.runtime import RuntimeEventKind

if TYPE_CHECKING:
    from routekeeper.storage.state import StateStorage


@dataclass
class RecoveryContext:
    storage: StateStorage
    replica_id: str | None
    """The replica running recovery (None for ``doctor``)."""
    stale_after_seconds: float
    healthy_for_seconds: float = 0.0
    """How long this replica has been *settled*: its liveness lock held on the same session
    and every heartbeat stored. Judging others by their heartbeat, or by a lock that is not
    proof (PostgreSQL), needs at least stale_after_seconds of it (see runtime_recovery)."""

    async def live_replica_ids(self) -> set[str]:
        """Replicas in a live phase, this one always included: whatever they own is theirs."""
        live = {r.id for r in await self.storage.runtime.live_replicas(upkeep=True)}
        if self.replica_id is not None:
            live.add(self.replica_id)
        return live


@dataclass
class RecoveryReport:
    surface: str
    counts: dict[str, int]
    dry_run: bool
    findings: list[str] = field(default_factory=list)
    crashed: list[str] = field(default_factory=list)
    """Replicas this step recorded crashed (their work is orphaned now)."""


@dataclass(frozen=True)
class RecoveryStep:
    surface: str
    description: str
    run: Callable[[RecoveryContext, bool], Awaitable[RecoveryReport]]
    periodic: bool = False
    """Run on every crash sweep too (every runtime.heartbeat_seconds)."""
    after_crash: bool = False
    """Run again whenever a periodic step recorded a replica crashed."""


def recovery_steps(storage: StateStorage) -> list[RecoveryStep]:
    """Every store's steps, in registry order of their surfaces."""
    steps = [step for store in storage.stores for step in store.recovery_steps()]
    unknown = [s.surface for s in steps if s.surface not in SURFACES]
    if unknown:
        raise ValueError(f"recovery steps for unregistered surfaces: {unknown}")
    order = list(SURFACES)
    return sorted(steps, key=lambda s: order.index(s.surface))


async def run_recovery(ctx: RecoveryContext, *, dry_run: bool = False) -> list[RecoveryReport]:
    """Run every step; unless dry-run, record one recovery.completed event per step."""
    reports = []
    for step in recovery_steps(ctx.storage):
        report = await step.run(ctx, dry_run)
        reports.append(report)
        if not dry_run and ctx.replica_id is not None:
            await ctx.storage.runtime.append_event(
                ctx.replica_id,
                RuntimeEventKind.RECOVERY_COMPLETED,
                {"surface": step.surface, "counts": report.counts},
            )
    return reports


async def sweep(ctx: RecoveryContext) -> list[RecoveryReport]:
    """The periodic steps; then, if one of them recorded a crash, the after-crash steps."""
    steps = recovery_steps(ctx.storage)
    reports = [await s.run(ctx, False) for s in steps if s.periodic]
    if any(r.crashed for r in reports):
        reports += [await s.run(ctx, False) for s in steps if s.after_crash]
    return reports
