"""How routekeeper's SQLite connections are set up: pragmas on every connection, our own
``BEGIN``, and the count of waits for another process's write lock."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine

from routekeeper.contract.errors import StorageError


@dataclass
class WriteLockWaits:
    """Write transactions that found another process holding SQLite's write lock and had to
    wait for it (within ``busy_timeout``), and how long they waited in all."""

    waits: int = 0
    seconds: float = 0.0


def sqlite_pragmas(
    engine: Engine,
    *,
    begin: str,
    synchronous: str,
    busy_ms: int,
    wal: bool = False,
    waits: WriteLockWaits | None = None,
) -> None:
    """Pragmas on every connection and our own ``begin``. With ``waits`` (the writer), the
    connection waits for no lock by default (inside ``BEGIN IMMEDIATE`` nothing in WAL mode
    waits): ``begin`` is tried at once, and only when the file's write lock is held by another
    process is the wait counted and ``begin`` tried again within ``busy_ms``."""

    @event.listens_for(engine, "connect")
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
        if waits is not None:
            cursor.execute("PRAGMA busy_timeout=0")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        if waits is None:
            conn.exec_driver_sql(begin)
            return
        cursor = conn.connection.dbapi_connection.cursor()
        try:
            try:
                cursor.execute(begin)
                return
            except Exception as exc:
                if not any(s in str(exc).lower() for s in ("locked", "busy")):
                    raise sa_exc.OperationalError(begin, None, exc) from exc
            started = time.monotonic()
            cursor.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
            try:
                conn.exec_driver_sql(begin)  # its failure is translated like any other
            finally:
                waits.waits += 1
                waits.seconds += time.monotonic() - started
                cursor.execute("PRAGMA busy_timeout=0")
        finally:
            cursor.close()
