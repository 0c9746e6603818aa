"""The ``runtime_status`` recovery step: the crash sweep, at start and every heartbeat."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from routekeeper.contract.runtime import CrashReason, ReplicaRecord
from routekeeper.storage.recovery import RecoveryContext, RecoveryReport, RecoveryStep
from routekeeper.storage.types import utcnow

log = logging.getLogger(__name__)


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
    storage = ctx.storage
    now = utcnow()
    settled = ctx.healthy_for_seconds >= ctx.stale_after_seconds
    verdicts: list[DeadReplica] = []
    for replica in await storage.runtime.live_replicas(upkeep=True):
        if replica.id == ctx.replica_id:
            continue
        alive = await storage.liveness.is_alive(replica)
        stale = (now - replica.heartbeat_at).total_seconds() > ctx.stale_after_seconds
        if alive is False and storage.liveness.free_lock_is_proof:
            verdicts.append(DeadReplica(replica, CrashReason.LOCK_FREE))
        elif stale and settled:
            reason = CrashReason.LOCK_FREE if alive is False else CrashReason.HEARTBEAT_STALE
            verdicts.append(DeadReplica(replica, reason))
        elif alive is False:
            verdicts.append(DeadReplica(replica, CrashReason.LOCK_FREE, final=False))
    return verdicts


async def sweep_crashed_replicas(ctx: RecoveryContext, dry_run: bool) -> RecoveryReport:
    """Mark dead replicas ``crashed`` (once, whoever sweeps)."""
    dead = [v for v in await judge_replicas(ctx) if v.final]
    crashed: list[str] = []
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
            crashed.append(r.id)
            log.warning(
                "replica %s crashed (%s); recorded by %s", r.id, item.reason, ctx.replica_id
            )
        await ctx.storage.liveness.forget(r)
    return RecoveryReport(
        surface="runtime_status",
        counts={"dead_found": len(dead), "marked_crashed": len(crashed)},
        dry_run=dry_run,
        findings=findings,
        crashed=crashed,
    )


SWEEP = RecoveryStep(
    surface="runtime_status",
    description="replicas left live by a dead process become crashed",
    run=sweep_crashed_replicas,
    periodic=True,
)
