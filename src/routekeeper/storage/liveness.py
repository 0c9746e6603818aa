"""Liveness locks: each replica holds one for its whole life, so others can tell a dead
replica from a live one.

- SQLite workspaces: ``flock`` on ``<workspace>/replicas/<id>.lock``. The kernel drops the lock
  when the process dies, however it dies, and never while it lives: a free flock is proof of
  death. Only meaningful on the same host.
- PostgreSQL: a session-level advisory lock on a dedicated, unpooled connection; the server
  drops it when that session ends. Others look it up in ``pg_locks`` without taking it. A
  session can also end under a live process (a network cut, a server restart, an idle
  timeout): then every lock its holder had is free until the holder takes it again at its next
  heartbeat, so a free advisory lock is a sign, not a proof (``free_lock_is_proof`` is False;
  ``storage.runtime_recovery`` says when it counts).
- memory: nothing to share, nothing to check.

``is_alive`` answers True (lock held), False (lock free) or None (cannot tell from here, e.g.
another host's file lock); the sweep then relies on the heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import fcntl
import logging
import os
import socket
import zlib
from pathlib import Path
from typing import Protocol

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from routekeeper.contract import BackendKind
from routekeeper.contract.errors import StorageError, StorageUnavailable
from routekeeper.contract.runtime import ReplicaRecord
from routekeeper.storage.database import Database
from routekeeper.storage.errors import raise_translated

log = logging.getLogger(__name__)

# pg_advisory_lock(int4, int4): this namespace, then a 31-bit hash of the replica id.
ADVISORY_NAMESPACE = 0x524B_5250  # "RKRP"
# The application_name of a liveness session names its replica, so a replica that finds its
# lock held can tell an earlier session of its own from another process.
SESSION_NAME_PREFIX = "routekeeper liveness "


class LockCheck(enum.Enum):
    """What :meth:`LivenessLock.ensure_held` found."""

    HELD = "held"
    """The lock and the session holding it are intact."""
    RETAKEN = "retaken"
    """The session had been lost; the lock is held again, on a new session."""
    PENDING = "pending"
    """The session had been lost and the lock is still held by the earlier session of this
    replica (the server has not noticed that it is gone): others see the replica alive;
    taken over at a later beat."""


class IdentityTaken(StorageError):
    """Another process holds this replica's liveness lock: its identity is not its own."""


class LivenessLock(Protocol):
    free_lock_is_proof: bool
    """Whether a free lock proves its holder dead (a flock), or may be a lost session of a
    live holder that takes it back at its next heartbeat (an advisory lock)."""

    async def acquire(self, replica_id: str) -> None: ...

    async def ensure_held(self, *, answer_within: float = 5.0) -> LockCheck: ...

    async def release(self, *, stopped: bool = True) -> None: ...

    async def is_alive(self, replica: ReplicaRecord) -> bool | None: ...

    async def forget(self, replica: ReplicaRecord) -> None: ...


def describe_os_error(exc: OSError, path: Path) -> str:
    """``no space left on device (<path>)``: the OS reason in words, then the path."""
    reason = os.strerror(exc.errno) if exc.errno else (exc.strerror or str(exc))
    return f"{reason[:1].lower()}{reason[1:]} ({path})"


class FileLiveness:
    """flock-based liveness for replicas sharing a SQLite workspace."""

    free_lock_is_proof = True

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

    async def ensure_held(self, *, answer_within: float = 5.0) -> LockCheck:
        return LockCheck.HELD  # a flock cannot be lost while the descriptor is open

    async def release(self, *, stopped: bool = True) -> None:
        """Drop the lock. The file goes too once ``stopped`` is stored; otherwise (the final
        write failed) it stays, free, so the next sweep can tell this replica is gone."""
        fd, path = self._fd, self._path
        self._fd = self._path = None
        if fd is None or path is None:
            return
        if stopped:
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


_HOLDER = text(
    "SELECT l.pid, a.application_name FROM pg_locks l "
    "LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 "
    "AND l.classid = CAST(:ns AS oid) AND l.objid = CAST(:key AS oid) AND l.database = "
    "(SELECT oid FROM pg_database WHERE datname = current_database())"
)


class PostgresLiveness:
    """Advisory-lock liveness for replicas sharing a PostgreSQL database."""

    free_lock_is_proof = False

    def __init__(self, db: Database) -> None:
        self.db = db
        self._conn: AsyncConnection | None = None
        self._replica_id: str | None = None
        self._pending_logged = False

    @property
    def session_name(self) -> str:
        return f"{SESSION_NAME_PREFIX}{self._replica_id}"

    def _params(self, replica_id: str) -> dict[str, int]:
        return {"ns": ADVISORY_NAMESPACE, "key": advisory_key(replica_id)}

    async def acquire(self, replica_id: str) -> None:
        self._replica_id = replica_id
        if await self._lock() is not None:
            raise StorageError(f"liveness lock of {replica_id} is already held")

    async def _lock(self) -> str | None:
        """Take the lock on a new session; None when taken, else the application_name of the
        session holding it ("" when it cannot be seen)."""
        assert self._replica_id is not None
        conn = await self.db.dedicated_connection()
        try:
            await conn.execute(
                text("SELECT set_config('application_name', :name, false)"),
                {"name": self.session_name},
            )
            got = (
                await conn.execute(
                    text(
                        "SELECT pg_try_advisory_lock(CAST(:ns AS integer), CAST(:key AS integer))"
                    ),
                    self._params(self._replica_id),
                )
            ).scalar_one()
            holder = None
            if not got:
                row = (await conn.execute(_HOLDER, self._params(self._replica_id))).first()
                holder = (row.application_name or "") if row is not None else ""
            await conn.commit()  # a session-level lock outlives the transaction
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await conn.close()
            raise_translated(exc)
        if not got:
            await conn.close()
            return holder
        self._conn = conn
        return None

    async def ensure_held(self, *, answer_within: float = 5.0) -> LockCheck:
        """Check the lock's session (one that does not answer within ``answer_within``
        seconds counts as lost); when it was lost (a network cut, a server restart), take the
        lock again on a new one. Raises StorageUnavailable when the database cannot be
        reached to do so, and IdentityTaken when another replica's session holds it."""
        if self._replica_id is None:
            return LockCheck.HELD
        if self._conn is not None:
            try:
                async with asyncio.timeout(answer_within):
                    await self._conn.execute(text("SELECT 1"))
                    await self._conn.commit()
                return LockCheck.HELD
            except (Exception, TimeoutError) as exc:  # any driver error means the same
                reason = _first_line(exc) if str(exc) else f"no answer within {answer_within:g}s"
                log.warning("liveness session lost (%s); taking the lock again", reason)
                conn, self._conn = self._conn, None
                with contextlib.suppress(Exception, TimeoutError):
                    async with asyncio.timeout(1.0):
                        await conn.invalidate()
                        await conn.close()
        holder = await self._lock()
        if holder is None:
            log.info("replica %s: liveness lock taken again", self._replica_id)
            self._pending_logged = False
            return LockCheck.RETAKEN
        if holder.startswith(SESSION_NAME_PREFIX) and holder != self.session_name:
            raise IdentityTaken(
                f"the liveness lock of {self._replica_id} is held by another session ({holder!r})"
            )
        if not self._pending_logged:
            whose = (
                "an earlier session of this replica"
                if holder == self.session_name
                else f"a session it cannot identify ({holder or 'name not visible'!r})"
            )
            log.warning(
                "replica %s: liveness lock still held by %s; taking it once the server ends "
                "that session",
                self._replica_id,
                whose,
            )
            self._pending_logged = True
        return LockCheck.PENDING

    async def release(self, *, stopped: bool = True) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            await conn.execute(
                text("SELECT pg_advisory_unlock(CAST(:ns AS integer), CAST(:key AS integer))"),
                self._params(self._replica_id or ""),
            )
            await conn.commit()
        except Exception as exc:  # closing the session releases it anyway
            log.debug("advisory unlock failed: %s", exc)
        finally:
            await conn.close()

    async def is_alive(self, replica: ReplicaRecord) -> bool | None:
        async with self.db.read(upkeep=True) as conn:
            held = (await conn.execute(_HOLDER, self._params(replica.id))).first()
        return held is not None

    async def forget(self, replica: ReplicaRecord) -> None:
        return None


class NoLiveness:
    """The memory backend: one process, nobody else to watch."""

    free_lock_is_proof = False

    async def acquire(self, replica_id: str) -> None:
        return None

    async def ensure_held(self, *, answer_within: float = 5.0) -> LockCheck:
        return LockCheck.HELD

    async def release(self, *, stopped: bool = True) -> None:
        return None

    async def is_alive(self, replica: ReplicaRecord) -> bool | None:
        return None

    async def forget(self, replica: ReplicaRecord) -> None:
        return None


def _first_line(exc: BaseException) -> str:
    message = str(exc).strip()
    return message.splitlines()[0] if message else type(exc).__name__


def liveness_for(db: Database, workspace: Path) -> LivenessLock:
    """The liveness mechanism that fits the backend ``runtime_status`` lives on."""
    if db.kind is BackendKind.POSTGRES:
        return PostgresLiveness(db)
    if db.kind is BackendKind.SQLITE:
        return FileLiveness(workspace / "replicas")
    return NoLiveness()
