"""Liveness locks: each replica holds one for its whole life, so others can tell a dead
replica from a live one without trusting clocks.

- SQLite workspaces: ``flock`` on ``<workspace>/replicas/<id>.lock``. The kernel drops the lock
  when the process dies, however it dies. Only meaningful on the same host.
- PostgreSQL: a session-level advisory lock on a dedicated connection; the server drops it
  when that connection closes. Others look it up in ``pg_locks`` without taking it.
- memory: nothing to share, nothing to check.

``is_alive`` answers True (lock held), False (lock free: the holder is gone) or None (cannot
tell from here, e.g. another host's file lock); the sweep then relies on the heartbeat.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import zlib
from pathlib import Path
from typing import Protocol

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from routekeeper.contract.errors import StorageError, StorageUnavailable
from routekeeper.contract.runtime import ReplicaRecord
from routekeeper.storage.database import Database

log = logging.getLogger(__name__)

# pg_advisory_lock(int4, int4): this namespace, then a 31-bit hash of the replica id.
ADVISORY_NAMESPACE = 0x524B_5250  # "RKRP"


class LivenessLock(Protocol):
    async def acquire(self, replica_id: str) -> None: ...

    async def ensure_held(self) -> None: ...

    async def release(self) -> None: ...

    async def is_alive(self, replica: ReplicaRecord) -> bool | None: ...

    async def forget(self, replica: ReplicaRecord) -> None: ...


def describe_os_error(exc: OSError, path: Path) -> str:
    """``no space left on device (<path>)``: the OS reason in words, then the path."""
    reason = os.strerror(exc.errno) if exc.errno else (exc.strerror or str(exc))
    return f"{reason[:1].lower()}{reason[1:]} ({path})"


class FileLiveness:
    """flock-based liveness for replicas sharing a SQLite workspace."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._fd: int | None = None
        self._path: Path | None = None

    def path_for(self, replica_id: str) -> Path:
        return self.directory / f"{replica_id}.lock"

    async def acquire(self, replica_id: str) -> None:
        path = self.path_for(replica_id)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageUnavailable(describe_os_error(exc, self.directory)) from exc
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StorageUnavailable(describe_os_error(exc, path)) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StorageError(f"liveness lock {path} is already held") from None
        except OSError as exc:
            os.close(fd)
            raise StorageUnavailable(describe_os_error(exc, path)) from exc
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        except OSError as exc:
            # The file is ours (we hold its lock): leave nothing behind.
            with contextlib.suppress(OSError):
                path.unlink()
            os.close(fd)
            raise StorageUnavailable(describe_os_error(exc, path)) from exc
        self._fd, self._path = fd, path

    async def ensure_held(self) -> None:
        return None  # a flock cannot be lost while the descriptor is open

    async def release(self) -> None:
        fd, path = self._fd, self._path
        self._fd = self._path = None
        if fd is None or path is None:
            return
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        os.close(fd)

    async def is_alive(self, replica: ReplicaRecord) -> bool | None:
        if replica.host != socket.gethostname():
            return None
        path = self.path_for(replica.id)
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return None  # another workspace, or already cleaned up: the heartbeat decides
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing drops the lock if we got it
        return False

    async def forget(self, replica: ReplicaRecord) -> None:
        """Remove a dead replica's lock file (after its crash is recorded)."""
        if replica.host == socket.gethostname():
            with contextlib.suppress(FileNotFoundError):
                self.path_for(replica.id).unlink()


def advisory_key(replica_id: str) -> int:
    return zlib.crc32(replica_id.encode()) & 0x7FFF_FFFF


class PostgresLiveness:
    """Advisory-lock liveness for replicas sharing a PostgreSQL database."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._conn: AsyncConnection | None = None
        self._replica_id: str | None = None

    async def acquire(self, replica_id: str) -> None:
        self._replica_id = replica_id
        await self._lock()

    async def _lock(self) -> None:
        assert self._replica_id is not None
        conn = await self.db.dedicated_connection()
        try:
            got = (
                await conn.execute(
                    text(
                        "SELECT pg_try_advisory_lock(CAST(:ns AS integer), CAST(:key AS integer))"
                    ),
                    {"ns": ADVISORY_NAMESPACE, "key": advisory_key(self._replica_id)},
                )
            ).scalar_one()
            await conn.commit()  # a session-level lock outlives the transaction
        except BaseException:
            await conn.close()
            raise
        if not got:
            await conn.close()
            raise StorageError(f"liveness lock of {self._replica_id} is already held")
        self._conn = conn

    async def ensure_held(self) -> None:
        """Re-take the lock if its connection was lost (e.g. PostgreSQL restarted)."""
        if self._replica_id is None:
            return
        if self._conn is not None:
            try:
                await self._conn.execute(text("SELECT 1"))
                await self._conn.commit()
                return
            except Exception as exc:  # the connection is gone; any driver error means that
                log.warning("liveness connection lost (%s); taking the lock again", exc)
                with contextlib.suppress(Exception):
                    await self._conn.invalidate()
                self._conn = None
        try:
            await self._lock()
        except StorageError as exc:
            log.warning("liveness lock not re-taken yet: %s", exc)

    async def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            await conn.execute(
                text("SELECT pg_advisory_unlock(CAST(:ns AS integer), CAST(:key AS integer))"),
                {"ns": ADVISORY_NAMESPACE, "key": advisory_key(self._replica_id or "")},
            )
            await conn.commit()
        except Exception as exc:  # closing the session releases it anyway
            log.debug("advisory unlock failed: %s", exc)
        finally:
            await conn.close()

    async def is_alive(self, replica: ReplicaRecord) -> bool | None:
        async with self.db.read(upkeep=True) as conn:
            held = (
                await conn.execute(
                    text(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                        "AND granted AND objsubid = 2 AND classid = CAST(:ns AS oid) "
                        "AND objid = CAST(:key AS oid) AND database = "
                        "(SELECT oid FROM pg_database WHERE datname = current_database())"
                    ),
                    {"ns": ADVISORY_NAMESPACE, "key": advisory_key(replica.id)},
                )
            ).scalar_one()
        return bool(held)

    async def forget(self, replica: ReplicaRecord) -> None:
        return None


class NoLiveness:
    """The memory backend: one process, nobody else to watch."""

    async def acquire(self, replica_id: str) -> None:
        return None

    async def ensure_held(self) -> None:
        return None

    async def release(self) -> None:
        return None

    async def is_alive(self, replica: ReplicaRecord) -> bool | None:
        return None

    async def forget(self, replica: ReplicaRecord) -> None:
        return None


def liveness_for(db: Database, workspace: Path) -> LivenessLock:
    """The liveness mechanism that fits the backend ``runtime_status`` lives on."""
    if db.kind.value == "postgres":
        return PostgresLiveness(db)
    if db.kind.value == "sqlite":
        return FileLiveness(workspace / "replicas")
    return NoLiveness()
