"""``routekeeper doctor``: read-only health checks of a workspace or shared database.

Checks, in order: the state contract; per backend: the SQLite file exists and passes
``PRAGMA integrity_check``, the database answers, its schema revision is this version's head
and matches the declared schema; then replicas left live by dead processes, replicas that
crashed recently, and every surface's recovery step in dry-run mode. Nothing is written
(opening a SQLite file that exists may switch it to WAL, which it already is after a serve).
"""

from __future__ import annotations

import enum
import sqlite3
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from routekeeper.contract import BackendKind
from routekeeper.contract.errors import ContractViolation, StorageError
from routekeeper.contract.runtime import ReplicaPhase
from routekeeper.settings import Settings
from routekeeper.storage.database import Database
from routekeeper.storage.migrate import SchemaStatus, inspect, schema_differences
from routekeeper.storage.recovery import RecoveryContext, run_recovery
from routekeeper.storage.runtime_recovery import judge_replicas
from routekeeper.storage.state import StateStorage
from routekeeper.storage.types import utcnow

RECENT_CRASH_HOURS = 24


class Level(enum.StrEnum):
    OK = "ok"
    WARN = "warn"
    ERROR = "error"


@dataclass
class Finding:
    check: str
    level: Level
    message: str
    subject: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "level": self.level.value,
            "subject": self.subject,
            "message": self.message,
            "details": self.details,
        }


async def diagnose(settings: Settings) -> list[Finding]:
    """Every finding; a healthy workspace yields only ``ok`` ones."""
    try:
        storage = StateStorage(settings)
    except ContractViolation as exc:
        return [Finding("contract", Level.ERROR, p) for p in exc.problems]
    findings = [Finding("contract", Level.OK, "every surface is on a backend its class allows")]
    usable: dict[str, bool] = {}
    try:
        for db in storage.databases.values():
            usable[db.name] = await _check_backend(db, settings, findings)
        if usable.get(storage.database_for("runtime_status").name):
            await _check_replicas(settings, storage, findings)
    finally:
        await storage.close()
    return findings


async def _check_backend(db: Database, settings: Settings, findings: list[Finding]) -> bool:
    where = f"{db.name} ({db.describe()})"
    if db.kind is BackendKind.MEMORY:
        findings.append(Finding("backend", Level.OK, "memory backend: nothing to check", where))
        return False
    if db.sqlite_path is not None:
        if not db.sqlite_path.exists():
            findings.append(
                Finding(
                    "backend",
                    Level.ERROR,
                    "no database file: never served here, or the wrong --workspace/--config",
                    where,
                )
            )
            return False
        problem = _sqlite_integrity(str(db.sqlite_path))
        if problem:
            findings.append(Finding("integrity", Level.ERROR, problem, where))
            return False
        findings.append(Finding("integrity", Level.OK, "PRAGMA integrity_check: ok", where))
    try:
        await db.open()
        state = await inspect(db)
    except StorageError as exc:
        findings.append(Finding("backend", Level.ERROR, exc.message, where))
        return False
    details = {"current": state.current, "head": state.head, "pending": state.pending}
    if state.status is SchemaStatus.AHEAD:
        findings.append(
            Finding(
                "schema",
                Level.ERROR,
                f"schema revision {state.current} is newer than this version knows ({state.head}): "
                "it was migrated by a newer routekeeper",
                where,
                details,
            )
        )
        return False
    if state.status is not SchemaStatus.CURRENT:
        findings.append(
            Finding(
                "schema",
                Level.ERROR,
                f"schema is {state.status} ({state.current or 'no revision'}, head {state.head}): "
                "run `routekeeper db upgrade` (or start `serve` with auto_migrate)",
                where,
                details,
            )
        )
        return False
    diffs = await schema_differences(db)
    if diffs:
        findings.append(
            Finding(
                "schema",
                Level.ERROR,
                f"at head but differs from the declared schema: {diffs[:5]}",
                where,
                {"differences": diffs},
            )
        )
        return False
    findings.append(Finding("schema", Level.OK, f"at head {state.head}", where, details))
    return True


def _sqlite_integrity(path: str) -> str | None:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error as exc:
        return f"cannot open: {exc}"
    try:
        rows = [r[0] for r in conn.execute("PRAGMA integrity_check(20)").fetchall()]
    except sqlite3.Error as exc:
        return f"integrity_check failed: {exc}"
    finally:
        conn.close()
    return None if rows == ["ok"] else "integrity_check: " + "; ".join(rows)


async def _check_replicas(
    settings: Settings, storage: StateStorage, findings: list[Finding]
) -> None:
    # The doctor is an outside observer with a healthy view of storage.
    ctx = RecoveryContext(
        storage,
        None,
        stale_after_seconds=settings.runtime.stale_after_seconds,
        healthy_for_seconds=float("inf"),
    )
    dead = await judge_replicas(ctx)
    stale = settings.runtime.stale_after_seconds
    for item in dead:
        r = item.replica
        then = (
            "the next replica to start or sweep will mark it crashed"
            if item.final
            else f"it is marked crashed unless it takes its lock back before its heartbeat is "
            f"{stale:g}s old (a lost database session frees the lock of a live replica too)"
        )
        findings.append(
            Finding(
                "replicas",
                Level.WARN,
                f"{r.phase} but {item.reason.value} (last heartbeat {r.heartbeat_at.isoformat()}); "
                f"{then}",
                r.id,
                {"host": r.host, "pid": r.pid},
            )
        )
    since = utcnow() - timedelta(hours=RECENT_CRASH_HOURS)
    crashed = await storage.runtime.list_replicas(limit=20, phases=[ReplicaPhase.CRASHED])
    recent = [r for r in crashed.data if r.stopped_at and r.stopped_at >= since]
    for r in recent:
        findings.append(
            Finding(
                "replicas",
                Level.WARN,
                f"crashed at {r.stopped_at.isoformat() if r.stopped_at else '?'} ({r.detail})",
                r.id,
            )
        )
    if not dead and not recent:
        live = await storage.runtime.live_replicas()
        findings.append(
            Finding(
                "replicas",
                Level.OK,
                f"{len(live)} live replica(s), none stale; "
                f"no crash in the last {RECENT_CRASH_HOURS} h",
            )
        )
    for report in await run_recovery(ctx, dry_run=True):
        level = Level.WARN if any(report.counts.values()) else Level.OK
        findings.append(
            Finding(
                "recovery",
                level,
                "would fix: " + (", ".join(report.findings) or "nothing"),
                report.surface,
                {"counts": report.counts},
            )
        )
