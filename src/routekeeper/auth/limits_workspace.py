"""Rate limits shared by the processes of one ``serve --workers N`` on one machine.

The workers share the workspace and nothing else that outlives a request, so they count in a
small SQLite file of their own there (``rate_limits.db``): one row per counted request
(key id, wall-clock time), one short ``BEGIN IMMEDIATE`` transaction per request of a limited
key (prune the key's rows older than the window, count, insert when below the limit). The
file lock makes the count exact across processes; ``synchronous=OFF`` keeps fsync off the
request path (a process crash loses nothing; an OS crash may lose the last counts, which only
ever makes a limit more lenient for at most one window). It runs on one thread of its own,
so a lock wait never blocks the event loop. Keys without a limit never touch it.

It is not a state surface (ARCHITECTURE.md, "Rate limits"): it only holds the last 60
seconds of request times, which every request prunes, and nothing reads it back; deleting it
forgets at most one window of counting. It is not part of the migrated schema: the table is
made here, and a file of another layout (``user_version``) or a damaged one is made again."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from routekeeper.auth.limits import WINDOW_SECONDS, LimiterCounts
from routekeeper.contract.auth import Principal

log = logging.getLogger(__name__)

FILE_NAME = "rate_limits.db"
LAYOUT_VERSION = 1
BUSY_TIMEOUT_SECONDS = 2.0
CLOCK_SLACK_SECONDS = 5.0
"""Rows further in the future than this (the wall clock was set back) are dropped."""
SWEEP_SECONDS = 60.0
"""How often a request also deletes every key's expired rows (keys no longer used)."""

_LAYOUT = (
    "DROP TABLE IF EXISTS hits",
    "CREATE TABLE hits (key_id TEXT NOT NULL, at REAL NOT NULL)",
    "CREATE INDEX hits_key_at ON hits (key_id, at)",
    f"PRAGMA user_version = {LAYOUT_VERSION}",
)


class WorkspaceLimiter:
    """Sliding-log limits counted in ``path``, shared by every process that opens it."""

    kind = "workspace"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.counts = LimiterCounts(self.kind, log)
        self._conn: sqlite3.Connection | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="rate-limits")
        self._next_sweep = 0.0

    async def hit(self, principal: Principal) -> dict[str, str] | None:
        limit = principal.requests_per_minute
        key_id = principal.key_id
        if limit is None or key_id is None:
            return None
        loop = asyncio.get_running_loop()
        try:
            allowed, count, reset = await loop.run_in_executor(
                self._executor, self._count, key_id, limit
            )
        except (sqlite3.Error, OSError) as exc:
            self.counts.unchecked(f"{self.path} cannot be written: {exc}")
            return None
        return self.counts.decide(limit, key_id, allowed, count, reset)

    # -- on the limiter's thread -----------------------------------------------------------

    def _count(self, key_id: str, limit: int) -> tuple[bool, int, float]:
        conn = self._conn or self._open()
        now = time.time()
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "DELETE FROM hits WHERE key_id = ? AND (at <= ? OR at > ?)",
                (key_id, now - WINDOW_SECONDS, now + CLOCK_SLACK_SECONDS),
            )
            count, oldest = conn.execute(
                "SELECT count(*), min(at) FROM hits WHERE key_id = ?", (key_id,)
            ).fetchone()
            allowed = count < limit
            if allowed:
                conn.execute("INSERT INTO hits (key_id, at) VALUES (?, ?)", (key_id, now))
                count += 1
                oldest = now if oldest is None else oldest
            if now >= self._next_sweep:
                conn.execute("DELETE FROM hits WHERE at <= ?", (now - WINDOW_SECONDS,))
                self._next_sweep = now + SWEEP_SECONDS
            conn.execute("COMMIT")
        except BaseException:
            self._drop()
            raise
        return allowed, count, oldest + WINDOW_SECONDS - now

    def _open(self) -> sqlite3.Connection:
        try:
            return self._connect()
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError):
                raise  # locked, unreadable directory: try again on the next request
            # Damaged (an OS crash with synchronous=OFF): it only held the last minute.
            log.warning("%s is not a usable database (%s): making it again", self.path, exc)
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            return self._connect()

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self.path,
            timeout=BUSY_TIMEOUT_SECONDS,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=OFF")
            conn.execute("BEGIN IMMEDIATE")
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            if version != LAYOUT_VERSION:
                for statement in _LAYOUT:
                    conn.execute(statement)
            conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None

    # -- reporting and lifecycle -----------------------------------------------------------

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._drop)
        self._executor.shutdown(wait=True)
