"""One configured backend as an object with an explicit lifecycle: ``open()``, ``read()`` and
``write()`` transactions, ``close()``.

SQLite (file): WAL; one writer connection, serialized in-process by a lock and across processes
by ``BEGIN IMMEDIATE`` + ``busy_timeout``; a small pool of reader connections. The driver's own
transaction handling is switched off (``isolation_level=None``) and we emit ``BEGIN`` ourselves,
because a deferred transaction that later writes fails with SQLITE_BUSY at once instead of
waiting. ``synchronous`` is set on every connection (it is per connection).

memory: in-memory SQLite on one connection (StaticPool), every transaction serialized.

PostgreSQL: ``postgresql://`` DSNs use psycopg 3; pool with pre-ping.

Never hold a transaction open across upstream I/O or a stream: take what you need, leave the
``async with`` block, then do the I/O.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, func, select
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from routekeeper.contract import BackendKind
from routekeeper.contract.errors import StorageError, StorageUnavailable
from routekeeper.settings import MemoryBackend, PostgresBackend, SQLiteBackend, redact_dsn
from routekeeper.storage.errors import translate_storage_error


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
        # SQLite has one writer; memory has one connection for everything.
        self._write_lock = asyncio.Lock() if self.kind is not BackendKind.POSTGRES else None
        self._read_lock = self._write_lock if self.kind is BackendKind.MEMORY else None

    # -- description -----------------------------------------------------------------------

    @property
    def dialect(self) -> str:
        return "postgresql" if self.kind is BackendKind.POSTGRES else "sqlite"

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
                _raise_translated(exc)
        elif isinstance(self.backend, MemoryBackend):
            engine = create_async_engine(
                "sqlite+aiosqlite://",
                poolclass=StaticPool,
                connect_args={"check_same_thread": False},
            )
            _sqlite_pragmas(engine, begin="BEGIN IMMEDIATE", synchronous="OFF", busy_ms=0)
            self._writer = self._reader = engine
        else:
            self._writer = create_async_engine(
                postgres_url(self.backend.dsn),
                pool_size=self.backend.pool_size,
                max_overflow=self.backend.pool_size,
                pool_pre_ping=True,
                pool_timeout=self.backend.connect_timeout_seconds,
                connect_args=_postgres_connect_args(self.backend),
            )
            self._reader = self._writer

    def _sqlite_engine(self, url: str, *, write: bool, pool_size: int) -> AsyncEngine:
        assert isinstance(self.backend, SQLiteBackend)
        engine = create_async_engine(url, pool_size=pool_size, max_overflow=0, pool_timeout=30)
        _sqlite_pragmas(
            engine,
            begin="BEGIN IMMEDIATE" if write else "BEGIN",
            synchronous=self.backend.synchronous,
            busy_ms=self.backend.busy_timeout_ms,
            wal=write,
        )
        return engine

    async def close(self) -> None:
        await self._dispose()

    async def _dispose(self) -> None:
        writer, reader = self._writer, self._reader
        self._writer = self._reader = None
        if reader is not None and reader is not writer:
            await reader.dispose()
        if writer is not None:
            await writer.dispose()

    # -- transactions ----------------------------------------------------------------------

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction, committed when the block ends without an exception.

        Raises the contract's ``StorageError`` subclasses for driver failures; other
        exceptions from the block roll back and propagate unchanged."""
        engine = self._engine(self._writer)
        async with _maybe(self._write_lock):
            try:
                async with engine.begin() as conn:
                    yield conn
            except BaseException as exc:
                _raise_translated(exc)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read-only snapshot transaction (rolled back at the end)."""
        engine = self._engine(self._reader)
        async with _maybe(self._read_lock):
            try:
                async with engine.connect() as conn:
                    async with conn.begin() as tx:
                        yield conn
                        await tx.rollback()
            except BaseException as exc:
                _raise_translated(exc)

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
                _raise_translated(exc)

    async def dedicated_connection(self) -> AsyncConnection:
        """A connection of its own for the caller to keep (and close): PostgreSQL session
        state such as a liveness advisory lock lives as long as it does."""
        try:
            return await self._engine(self._writer).connect()
        except Exception as exc:
            _raise_translated(exc)
            raise

    async def count_rows(self, table: Any) -> int:
        async with self.read() as conn:
            return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())

    def _engine(self, engine: AsyncEngine | None) -> AsyncEngine:
        if engine is None:
            raise StorageUnavailable(f"backend {self.name!r} is not open yet")
        return engine


def _postgres_connect_args(backend: PostgresBackend) -> dict[str, Any]:
    """libpq options so that a peer that stops answering is noticed in seconds instead of at
    the kernel's TCP timeout (minutes): keepalives on idle connections, and a bound on how long
    sent data may stay unacknowledged."""
    timeout = max(1, int(backend.connect_timeout_seconds))
    return {
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


def _raise_translated(exc: BaseException) -> None:
    translated = translate_storage_error(exc) if isinstance(exc, Exception) else None
    if translated is None or translated is exc:
        raise exc
    raise translated from exc


def _sqlite_pragmas(
    engine: AsyncEngine, *, begin: str, synchronous: str, busy_ms: int, wal: bool = False
) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
        if wal:
            cursor.execute("PRAGMA journal_mode=WAL")
            mode = cursor.fetchone()[0]
            if str(mode).lower() != "wal":
                raise StorageError(f"SQLite refused WAL mode (journal_mode is {mode})")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql(begin)


class _Null:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


def _maybe(lock: asyncio.Lock | None) -> Any:
    return lock if lock is not None else _Null()
