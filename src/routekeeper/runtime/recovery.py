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
    """How long this replica has been *settled*: its liveness lock held on the same session
    and every heartbeat stored. Judging others by their heartbeat, or by a lock that is not
    proof (PostgreSQL), needs at least stale_after_seconds of it (see judge_replicas)."""


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
    final: bool = True
    """False: a sign only (a free lock that is not proof, the heartbeat still fresh or the
    judge not settled yet); nothing is recorded for it."""


async def judge_replicas(ctx: RecoveryContext) -> list[DeadReplica]:
    """Live-phase replicas (other than ours) that are gone, or look it.

    With S = ``runtime.stale_after_seconds``:

    - a free flock (SQLite, same host) is proof: ``lock_free`` at once, whoever looks;
    - otherwise a replica is gone when its heartbeat is older than S *and* the judge has been
      settled (own lock on one session, every heartbeat stored) for at least S: ``lock_free``
      when its lock is free (PostgreSQL: its session ended and it did not take it back),
      ``heartbeat_stale`` when it holds it (hung) or when that cannot be seen from here.

    Why both conditions: when the database is cut off from everyone, every advisory lock is
    free and every heartbeat old at once; each live replica takes its lock back and stores a
    heartbeat within S/2 + heartbeat_seconds of the database answering again (a beat that was
    stuck ends within S/2, the next one starts heartbeat_seconds later), which is never more
    than S. A judge that was itself cut off is not settled for S after that, so it sees them
    back before it may judge; a judge that was not cut off sees a fresh heartbeat."""
    storage, runtime = ctx.storage, ctx.settings.runtime
    now = utcnow()
    settled = ctx.healthy_for_seconds >= runtime.stale_after_seconds
    verdicts: list[DeadReplica] = []
    for replica in await storage.runtime.live_replicas(upkeep=True):
        if replica.id == ctx.replica_id:
            continue
        alive = await storage.liveness.is_alive(replica)
        stale = (now - replica.heartbeat_at).total_seconds() > runtime.stale_after_seconds
        if alive is False and storage.liveness.free_lock_is_proof:
            verdicts.append(DeadReplica(replica, CrashReason.LOCK_FREE))
        elif stale and settled:
            reason = CrashReason.LOCK_FREE if alive is False else CrashReason.HEARTBEAT_STALE
            verdicts.append(DeadReplica(replica, reason))
        elif alive is False:
            verdicts.append(DeadReplica(replica, CrashReason.LOCK_FREE, final=False))
    return verdicts


async def find_dead_replicas(ctx: RecoveryContext) -> list[DeadReplica]:
    """The replicas :func:`judge_replicas` finds gone for certain."""
    return [v for v in await judge_replicas(ctx) if v.final]


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
            r.id, reason=item.reason, detected_by=ctx.replica_id, last_heartbeat_at=r.heartbeat_at
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
