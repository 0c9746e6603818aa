"""One configured backend as an object with an explicit lifecycle: ``open()``, ``read()`` and
``write()`` transactions, ``close()``.

Connections come in lanes, so that the replica's own upkeep never queues behind client reads:

- reads (``read()``): the API's queries; a pool of ``read_pool_size`` (SQLite) or ``pool_size``
  (PostgreSQL) connections. When all are busy a read waits at most ``pool_timeout_seconds``,
  then fails with ``StorageBusy`` (503, ``retry-after``).
- writes (``write()``): every write transaction (heartbeat, replay writer, phase changes) on
  connections of their own: SQLite's one writer, or a small PostgreSQL pool.
- upkeep reads (``read(upkeep=True)``): what the heartbeat's crash sweep reads, on the write
  side (PostgreSQL) or a reader connection of its own (SQLite).
- sessions (``dedicated_connection()``, PostgreSQL): unpooled connections that carry session
  state, i.e. the liveness advisory lock; closing one really ends its session.

SQLite (file): WAL; one write transaction at a time, serialized in-process by a lock and across
processes (the workers of one ``serve --workers N``, or a CLI command) by ``BEGIN IMMEDIATE`` +
``busy_timeout``; a small pool of reader connections. Writes run on one of two writer
connections, never both at once (the lock): ``write()``'s, through the async driver (each
statement, ``BEGIN`` and ``COMMIT`` a round trip to the driver's thread), and
``run_write()``'s, a plain ``sqlite3`` connection on a thread of its own that runs a whole
transaction given as one function in one call (the hot, acknowledged writes: replay batches,
stored responses). The writer first tries ``BEGIN
IMMEDIATE`` without waiting; when another process holds the write lock it counts a wait
(``write_lock_waits``, ``write_lock_wait_seconds``: ``/metrics``) and tries again within
``busy_timeout``. The driver's own
transaction handling is switched off (``isolation_level=None``) and we emit ``BEGIN`` ourselves,
because a deferred transaction that later writes fails with SQLITE_BUSY at once instead of
waiting. ``synchronous`` is set on every connection (it is per connection).

memory: in-memory SQLite on one connection (StaticPool), every transaction serialized.

PostgreSQL: ``postgresql://`` DSNs use psycopg 3; pools with pre-ping.

Never hold a transaction open across upstream I/O or a stream: take what you need, leave the
``async with`` block, then do the I/O.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from sqlalchemy import create_engine, func, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool, StaticPool

from routekeeper.contract import BackendKind
from routekeeper.contract.errors import StorageBusy, StorageUnavailable
from routekeeper.storage.config import MemoryBackend, PostgresBackend, SQLiteBackend, redact_dsn
from routekeeper.storage.dialect import Dialect, dialect_of
from routekeeper.storage.errors import raise_translated
from routekeeper.storage.sqlite_connection import WriteLockWaits, sqlite_pragmas
from routekeeper.storage.sqlite_writer import ProcessLock, SQLiteWriter

log = logging.getLogger(__name__)

_AFTER_COMMIT = "routekeeper.after_commit"
T = TypeVar("T")

# PostgreSQL write connections: the heartbeat, the replay writer, phase changes and retention
# each hold at most one, briefly; two more open on demand.
POSTGRES_WRITE_POOL = 2
POSTGRES_WRITE_OVERFLOW = 2
APPLICATION_NAME = "routekeeper"


def postgres_url(dsn: str) -> URL:
    """Map ``postgresql://`` and ``postgres://`` DSNs to the psycopg 3 driver."""
    return make_url(dsn).set(drivername="postgresql+psycopg")


class Database:
    """A backend's engines and transactions. Not usable before :meth:`open`."""

    def __init__(
        self,
        name: str,
        backend: SQLiteBackend | PostgresBackend | MemoryBackend,
        *,
        sqlite_path: Path | None = None,
    ) -> None:
        self.name = name
        self.backend = backend
        self.kind = BackendKind(backend.type)
        self.sqlite_path = sqlite_path
        if self.kind is BackendKind.SQLITE and sqlite_path is None:
            raise ValueError("a sqlite backend needs its resolved path")
        self._writer: AsyncEngine | None = None
        self._reader: AsyncEngine | None = None
        self._upkeep: AsyncEngine | None = None
        self._sessions: AsyncEngine | None = None
        # SQLite file: run_write()'s connection, on a thread of its own, and run_read()'s
        # connections, on reader threads.
        self._sqlite_writer: SQLiteWriter | None = None
        self._sqlite_reader: Engine | None = None
        self._read_threads: ThreadPoolExecutor | None = None
        # SQLite has one writer; memory has one connection for everything.
        self._write_lock = asyncio.Lock() if self.kind is not BackendKind.POSTGRES else None
        self._read_lock = self._write_lock if self.kind is BackendKind.MEMORY else None
        self.write_lock_waits = WriteLockWaits()

    # -- description -----------------------------------------------------------------------

    @property
    def dialect(self) -> Dialect:
        return dialect_of(self.kind)

    def describe(self) -> str:
        """Where this backend keeps its data, with secrets redacted."""
        if isinstance(self.backend, PostgresBackend):
            return redact_dsn(self.backend.dsn)
        if self.kind is BackendKind.MEMORY:
            return "memory (lost when the process exits)"
        return str(self.sqlite_path)

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._writer is not None

    async def open(self) -> None:
        if self._writer is not None:
            return
        if isinstance(self.backend, SQLiteBackend):
            assert self.sqlite_path is not None
            try:
                self.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageUnavailable(
                    f"cannot create {self.sqlite_path.parent}: {exc.strerror or exc}"
                ) from exc
            url = f"sqlite+aiosqlite:///{self.sqlite_path}"
            self._writer = self._sqlite_engine(url, write=True, pool_size=1)
            self._reader = self._sqlite_engine(
                url, write=False, pool_size=self.backend.read_pool_size
            )
            self._upkeep = self._sqlite_engine(url, write=False, pool_size=1)
            sync_writer = create_engine(
                f"sqlite:///{self.sqlite_path}", pool_size=1, max_overflow=0
            )
            sqlite_pragmas(
                sync_writer,
                begin="BEGIN IMMEDIATE",
                synchronous=self.backend.synchronous,
                busy_ms=self.backend.busy_timeout_ms,
                waits=self.write_lock_waits,
            )
            assert self._write_lock is not None
            turns = (
                ProcessLock(f"{self.sqlite_path}-writer", self.write_lock_waits)
                if ProcessLock.available()
                else None
            )
            self._sqlite_writer = SQLiteWriter(
                sync_writer, self._write_lock, _AFTER_COMMIT, process_lock=turns
            )
            readers = self.backend.read_pool_size
            self._sqlite_reader = create_engine(
                f"sqlite:///{self.sqlite_path}",
                pool_size=readers,
                max_overflow=0,
                pool_timeout=self.backend.pool_timeout_seconds,
                # Pooled connections serve whichever reader thread checks them out.
                connect_args={"check_same_thread": False},
            )
            sqlite_pragmas(
                self._sqlite_reader,
                begin="BEGIN",
                synchronous=self.backend.synchronous,
                busy_ms=self.backend.busy_timeout_ms,
            )
            self._read_threads = ThreadPoolExecutor(readers, thread_name_prefix="sqlite-reader")
            try:
                # The writer's connect hook switches the file to WAL (a no-op once it is).
                async with self._writer.connect():
                    pass
            except BaseException as exc:
                await self._dispose()
                if isinstance(exc, Exception) and _no_space_left(self.sqlite_path.parent):
                    # SQLite says "disk I/O error" when it cannot create its -wal/-shm files.
                    raise StorageUnavailable(
                        f"no space left on device ({self.sqlite_path.parent})"
                    ) from exc
                raise_translated(exc)
        elif isinstance(self.backend, MemoryBackend):
            engine = create_async_engine(
                "sqlite+aiosqlite://",
                poolclass=StaticPool,
                connect_args={"check_same_thread": False},
            )
            sqlite_pragmas(
                engine.sync_engine, begin="BEGIN IMMEDIATE", synchronous="OFF", busy_ms=0
            )
            self._writer = self._reader = self._upkeep = engine
        else:
            pg_url = postgres_url(self.backend.dsn)
            connect_args = _postgres_connect_args(self.backend)
            self._writer = create_async_engine(
                pg_url,
                pool_size=POSTGRES_WRITE_POOL,
                max_overflow=POSTGRES_WRITE_OVERFLOW,
                pool_pre_ping=True,
                pool_timeout=self.backend.pool_timeout_seconds,
                connect_args=connect_args,
            )
            self._reader = create_async_engine(
                pg_url,
                pool_size=self.backend.pool_size,
                max_overflow=0,
                pool_pre_ping=True,
                pool_timeout=self.backend.pool_timeout_seconds,
                connect_args=connect_args,
            )
            self._upkeep = self._writer
            self._sessions = create_async_engine(
                pg_url, poolclass=NullPool, connect_args=connect_args
            )

    def _sqlite_engine(self, url: str, *, write: bool, pool_size: int) -> AsyncEngine:
        assert isinstance(self.backend, SQLiteBackend)
        engine = create_async_engine(
            url,
            pool_size=pool_size,
            max_overflow=0,
            pool_timeout=self.backend.pool_timeout_seconds,
        )
        sqlite_pragmas(
            engine.sync_engine,
            begin="BEGIN IMMEDIATE" if write else "BEGIN",
            synchronous=self.backend.synchronous,
            busy_ms=self.backend.busy_timeout_ms,
            wal=write,
            waits=self.write_lock_waits if write else None,
        )
        return engine

    async def close(self) -> None:
        await self._dispose()

    def engines(self) -> list[Engine]:
        """The open engines, each once, as the synchronous engines that events are listened
        for on (for instrumentation: statement counts in tests)."""
        found: list[Engine] = []
        for engine in (self._writer, self._reader, self._upkeep, self._sessions):
            if engine is not None and all(engine.sync_engine is not e for e in found):
                found.append(engine.sync_engine)
        if self._sqlite_writer is not None:
            found.append(self._sqlite_writer.engine)
        if self._sqlite_reader is not None:
            found.append(self._sqlite_reader)
        return found

    async def _dispose(self) -> None:
        engines = [self._sessions, self._upkeep, self._reader, self._writer]
        self._writer = self._reader = self._upkeep = self._sessions = None
        sqlite_writer, self._sqlite_writer = self._sqlite_writer, None
        if sqlite_writer is not None:
            await sqlite_writer.close()
        reader, self._sqlite_reader = self._sqlite_reader, None
        threads, self._read_threads = self._read_threads, None
        if threads is not None:
            await asyncio.to_thread(threads.shutdown)  # the reads under way end first
        if reader is not None:
            reader.dispose()
        disposed: list[AsyncEngine] = []
        for engine in engines:
            if engine is not None and all(engine is not e for e in disposed):
                disposed.append(engine)
                await engine.dispose()

    # -- transactions ----------------------------------------------------------------------

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction, committed when the block ends without an exception.

        Raises the contract's ``StorageError`` subclasses for driver failures; other
        exceptions from the block roll back and propagate unchanged."""
        engine = self._engine(self._writer)
        callbacks: list[Callable[[], object]] = []
        async with _maybe(self._write_lock):
            try:
                async with engine.begin() as conn:
                    conn.info[_AFTER_COMMIT] = callbacks
                    try:
                        yield conn
                    finally:
                        conn.info.pop(_AFTER_COMMIT, None)
            except BaseException as exc:
                self._raise(exc, "write")
        await _run_callbacks(callbacks)

    async def run_write(self, fn: Callable[[Connection], T], *, settle: bool = True) -> T:
        """``fn`` as one write transaction, committed before this returns; returns what ``fn``
        returns. ``fn`` runs Core statements on a synchronous connection and must not do I/O
        of its own; ``after_commit`` works on its connection as in :meth:`write`.

        On a SQLite file the whole transaction (``BEGIN IMMEDIATE``, ``fn``, ``COMMIT``) runs
        on the writer thread in one call instead of a round trip per statement, shared with
        the other ``run_write`` calls queued meanwhile (``fn`` raising rolls back its own
        writes only; to that end a group with a failing write runs again, each in a
        savepoint, so ``fn`` may run twice and must change nothing but the database): see
        ``storage.sqlite_writer`` (and ``settle``, for a backlog written in bounded
        transactions). Elsewhere ``fn`` runs inside :meth:`write`.
        Raises like :meth:`write`."""
        if self._sqlite_writer is None:
            async with self.write() as conn:
                return await conn.run_sync(fn)
        try:
            result, callbacks = await self._sqlite_writer.run(fn, settle=settle)
        except BaseException as exc:
            self._raise(exc, "write")
        await _run_callbacks(callbacks)
        return result  # type: ignore[no-any-return]

    async def run_read(self, fn: Callable[[Connection], T]) -> T:
        """``fn`` in a read-only snapshot transaction (rolled back at the end); returns what
        ``fn`` returns. ``fn`` runs Core statements on a synchronous connection and must not do
        I/O of its own. On a SQLite file the whole transaction runs in one call on a reader
        thread (one hop instead of a round trip per statement, ``BEGIN`` and rollback: the
        hot reads, such as a turn's context); elsewhere ``fn`` runs inside :meth:`read`.
        Raises like :meth:`read`."""
        if self._sqlite_reader is None or self._read_threads is None:
            async with self.read() as conn:
                return await conn.run_sync(fn)
        reader = self._sqlite_reader
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._read_threads, _read_call, reader, fn)
        except BaseException as exc:
            self._raise(exc, "read")

    @asynccontextmanager
    async def read(self, *, upkeep: bool = False) -> AsyncIterator[AsyncConnection]:
        """A read-only snapshot transaction (rolled back at the end).

        ``upkeep``: a read of the replica's own upkeep (the crash sweep), on connections that
        client reads never hold, so a burst of API reads cannot delay a heartbeat."""
        engine = self._engine(self._upkeep if upkeep else self._reader)
        async with _maybe(self._read_lock):
            try:
                async with engine.connect() as conn:
                    async with conn.begin() as tx:
                        yield conn
                        await tx.rollback()
            except BaseException as exc:
                self._raise(exc, "upkeep" if upkeep else "read")

    @asynccontextmanager
    async def raw_connection(self) -> AsyncIterator[AsyncConnection]:
        """A writer connection with no transaction begun, holding the in-process write lock.
        For migrations, which manage their own transaction and SQLite pragmas."""
        engine = self._engine(self._writer)
        async with _maybe(self._write_lock):
            try:
                async with engine.connect() as conn:
                    yield conn
            except BaseException as exc:
                raise_translated(exc)

    async def dedicated_connection(self) -> AsyncConnection:
        """A connection of its own for the caller to keep (and close): PostgreSQL session
        state such as a liveness advisory lock lives as long as it does. It belongs to no
        pool, so closing it ends the session (and drops whatever lock it still held)."""
        try:
            return await self._engine(self._sessions or self._writer).connect()
        except Exception as exc:
            raise_translated(exc)

    def _raise(self, exc: BaseException, lane: str) -> NoReturn:
        if isinstance(exc, sa_exc.TimeoutError):  # every pooled connection stayed in use
            raise StorageBusy(
                f"no {lane} connection of backend {self.name!r} became free within "
                f"{self._pool_timeout():g}s ({self._pool_size(lane)} in use); retry shortly",
                details={"backend": self.name, "lane": lane},
            ) from exc
        raise_translated(exc)

    def _pool_timeout(self) -> float:
        return float(getattr(self.backend, "pool_timeout_seconds", 0.0))

    def _pool_size(self, lane: str) -> int:
        if lane == "read":
            if isinstance(self.backend, PostgresBackend):
                return self.backend.pool_size
            if isinstance(self.backend, SQLiteBackend):
                return self.backend.read_pool_size
        if lane in ("write", "upkeep") and isinstance(self.backend, PostgresBackend):
            return POSTGRES_WRITE_POOL + POSTGRES_WRITE_OVERFLOW
        return 1

    async def count_rows(self, table: Any) -> int:
        async with self.read() as conn:
            return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())

    def _engine(self, engine: AsyncEngine | None) -> AsyncEngine:
        if engine is None:
            raise StorageUnavailable(f"backend {self.name!r} is not open yet")
        return engine


async def _run_callbacks(callbacks: list[Callable[[], object]]) -> None:
    for callback in callbacks:  # committed: now it may be told (SSE, fan-out)
        try:
            result = callback()
            if inspect.isawaitable(result):
                await result
        except Exception:  # the write is committed whatever a listener does
            log.exception("an after-commit callback failed")


def after_commit(conn: AsyncConnection | Connection, callback: Callable[[], object]) -> None:
    """Run ``callback`` (a function, or one returning an awaitable) once the write transaction
    ``conn`` belongs to has committed; never when it rolls back. What is published to others
    (SSE, Redis fan-out) is published from here, so nothing is seen before its commit."""
    callbacks = conn.info.get(_AFTER_COMMIT)
    if callbacks is None:
        raise RuntimeError("after_commit needs a connection of Database.write() or run_write()")
    callbacks.append(callback)


def _postgres_connect_args(backend: PostgresBackend) -> dict[str, Any]:
    """libpq options so that a peer that stops answering is noticed in seconds instead of at
    the kernel's TCP timeout (minutes): keepalives on idle connections, and a bound on how long
    sent data may stay unacknowledged."""
    timeout = max(1, int(backend.connect_timeout_seconds))
    return {
        "application_name": APPLICATION_NAME,
        "connect_timeout": timeout,
        "keepalives": 1,
        "keepalives_idle": 5,
        "keepalives_interval": 2,
        "keepalives_count": 3,
        "tcp_user_timeout": timeout * 2000,
    }


def _no_space_left(directory: Path) -> bool:
    try:
        stats = os.statvfs(directory)
    except OSError:
        return False
    return stats.f_bavail == 0 or (stats.f_files > 0 and stats.f_favail == 0)


def _read_call(engine: Engine, fn: Callable[[Connection], T]) -> T:
    """On a reader thread: ``fn`` in a snapshot transaction, rolled back."""
    with engine.connect() as conn, conn.begin() as tx:
        try:
            return fn(conn)
        finally:
            tx.rollback()


class _Null:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


def _maybe(lock: asyncio.Lock | None) -> Any:
    return lock if lock is not None else _Null()
