"""Recovery: what startup does about state a crash left behind, surface by surface.

Each surface may declare one :class:`RecoveryStep`. ``serve`` runs them all in the
``recovering`` phase, before ``/readyz`` turns 200, and records one ``recovery.completed``
event per step with the counts it found. ``routekeeper doctor`` runs the same steps with
``dry_run=True``: they report what they would fix and change nothing. Steps are idempotent:
running one twice fixes nothing the second time.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta

from routekeeper.contract import SURFACES
from routekeeper.contract.runtime import CrashReason, ReplicaRecord, RuntimeEventKind
from routekeeper.settings import Settings
from routekeeper.storage.state import StateStorage
from routekeeper.storage.types import utcnow

log = logging.getLogger(__name__)


@dataclass
class RecoveryContext:
    settings: Settings
    storage: StateStorage
    replica_id: str | None
    """The replica running recovery (None for ``doctor``)."""
    healthy_for_seconds: float = 0.0
    """How long this replica's own heartbeats have been stored without a failure; judging
    others by their heartbeat alone needs a window of stale_after_seconds (see sweep)."""


@dataclass
class RecoveryReport:
    surface: str
    counts: dict[str, int]
    dry_run: bool
    findings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RecoveryStep:
    surface: str
    description: str
    run: Callable[[RecoveryContext, bool], Awaitable[RecoveryReport]]


@dataclass(frozen=True)
class DeadReplica:
    replica: ReplicaRecord
    reason: CrashReason


async def find_dead_replicas(ctx: RecoveryContext) -> list[DeadReplica]:
    """Live-phase replicas (other than ours) that are gone.

    A free liveness lock is proof. A heartbeat older than ``stale_after_seconds`` counts when
    the lock is free or cannot be checked from here, and, for a replica whose lock is still
    held (a hung process), only when our own heartbeats have been stored for at least that
    long: after a storage outage every heartbeat is old, and nobody should be declared dead
    for it."""
    storage, runtime = ctx.storage, ctx.settings.runtime
    stale_before = utcnow() - timedelta(seconds=runtime.stale_after_seconds)
    dead: list[DeadReplica] = []
    for replica in await storage.runtime.live_replicas(upkeep=True):
        if replica.id == ctx.replica_id:
            continue
        alive = await storage.liveness.is_alive(replica)
        stale = replica.heartbeat_at < stale_before
        if alive is False:
            dead.append(DeadReplica(replica, CrashReason.LOCK_FREE))
        elif stale and (alive is None or ctx.healthy_for_seconds >= runtime.stale_after_seconds):
            dead.append(DeadReplica(replica, CrashReason.HEARTBEAT_STALE))
    return dead


async def sweep_crashed_replicas(ctx: RecoveryContext, dry_run: bool) -> RecoveryReport:
    """runtime_status recovery: mark dead replicas ``crashed`` (once, whoever sweeps)."""
    dead = await find_dead_replicas(ctx)
    marked = 0
    findings = []
    for item in dead:
        r = item.replica
        findings.append(
            f"replica {r.id} ({r.host} pid {r.pid}) is {r.phase} but {item.reason.value}; "
            f"last heartbeat {r.heartbeat_at.isoformat()}"
        )
        if dry_run:
            continue
        if await ctx.storage.runtime.mark_crashed(
            r.id, reason=item.reason, detected_by=ctx.replica_id
        ):
            marked += 1
            log.warning(
                "replica %s crashed (%s); recorded by %s", r.id, item.reason, ctx.replica_id
            )
        await ctx.storage.liveness.forget(r)
    return RecoveryReport(
        surface="runtime_status",
        counts={"dead_found": len(dead), "marked_crashed": marked},
        dry_run=dry_run,
        findings=findings,
    )


async def abort_orphaned_replay_records(ctx: RecoveryContext, dry_run: bool) -> RecoveryReport:
    """router_replay recovery: records left ``in_progress`` by replicas that are not live any
    more become ``aborted`` / ``process_restart``."""
    live = {r.id for r in await ctx.storage.runtime.live_replicas(upkeep=True)}
    if ctx.replica_id is not None:
        live.add(ctx.replica_id)
    dead = [
        rid for rid in await ctx.storage.replay.replicas_with_records_in_flight() if rid not in live
    ]
    if dry_run:
        found = await ctx.storage.replay.count_in_flight(dead)
        findings = [f"{found} replay record(s) in flight from {', '.join(dead)}"] if found else []
        return RecoveryReport("router_replay", {"aborted": found}, True, findings)
    aborted = await ctx.storage.replay.abort_in_flight(dead)
    return RecoveryReport("router_replay", {"aborted": aborted}, False)


def recovery_steps() -> list[RecoveryStep]:
    """The recovery steps of every registered surface that declares one, in registry order."""
    steps = [
        RecoveryStep(
            surface="runtime_status",
            description="replicas left live by a dead process become crashed",
            run=sweep_crashed_replicas,
        ),
        RecoveryStep(
            surface="router_replay",
            description="records in flight at a crash become aborted / process_restart",
            run=abort_orphaned_replay_records,
        ),
    ]
    unknown = [s.surface for s in steps if s.surface not in SURFACES]
    assert not unknown, f"recovery steps for unregistered surfaces: {unknown}"
    return steps


async def run_recovery(ctx: RecoveryContext, *, dry_run: bool = False) -> list[RecoveryReport]:
    """Run every step; unless dry-run, record one recovery.completed event per step."""
    reports = []
    for step in recovery_steps():
        report = await step.run(ctx, dry_run)
        reports.append(report)
        if not dry_run and ctx.replica_id is not None:
            await ctx.storage.runtime.append_event(
                ctx.replica_id,
                RuntimeEventKind.RECOVERY_COMPLETED,
                {"surface": step.surface, "counts": report.counts},
            )
    return reports
