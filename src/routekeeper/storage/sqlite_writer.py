"""``Database.run_write`` on a SQLite file: whole write transactions in one call each, on a plain
``sqlite3`` connection that belongs to one thread of its own.

Through the async driver every statement, ``BEGIN`` and ``COMMIT`` is a round trip to the
driver's thread; here a transaction is one. Write functions queued while a transaction runs
share the next one (group commit: the replay writer's batch, a stored response's rows and any
other caller commit with one ``fsync``). Several writes run one after the other; when one raises
(a refused value), that transaction is rolled back and they run again, each in a savepoint of
its own, so that the one that raises is rolled back alone and the others commit (a write
function may therefore run twice, and must not change anything but the database). After a
commit the writer lets the loop run a few rounds before the next transaction, so that the
writers just answered queue their next batch in time for it, and so it does before the first
one when a write wakes it from idle, so that the other writes of the same request (a stored
response's rows after its replay record) share it. Each caller learns its own
outcome only once the commit carrying its write has returned. The in-process write lock is
held for the whole transaction, so ``Database.write()`` and this writer never write at
once."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Connection, Engine

from routekeeper.storage.sqlite_connection import WriteLockWaits

try:
    import fcntl
except ImportError:  # not on Windows: SQLite's busy handler alone orders the writers
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

WriteFn = Callable[[Connection], Any]
# Loop rounds between a commit and the next transaction (see ``_flush``); a caller already has
# its answer by then, so this delays no one who waits alone.
SETTLE_ROUNDS = 8
_SAVEPOINT = "routekeeper_write"


class ProcessLock:
    """An exclusive ``flock`` on ``path`` (created if missing), held by one thread at a time
    around a write transaction; a wait for another process is counted in ``waits``. It only
    spares the waiting: SQLite's own lock keeps the writes apart, so when the file cannot be
    opened (a read-only directory, no inode left) the writer logs it once and goes on
    without it."""

    def __init__(self, path: str, waits: WriteLockWaits) -> None:
        self.path = path
        self.waits = waits
        self._fd: int | None = None
        self._unusable = False

    @staticmethod
    def available() -> bool:
        return fcntl is not None

    def acquire(self) -> bool:
        """Take the lock (waiting for another process's turn); False when there is none."""
        if self._fd is None:
            if self._unusable:
                return False
            try:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:
                self._unusable = True
                log.warning(
                    "cannot open %s (%s): writers of other processes are woken by SQLite's "
                    "busy handler instead",
                    self.path,
                    exc.strerror or exc,
                )
                return False
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            pass
        started = time.monotonic()
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)  # the GIL is free while it waits
        finally:
            self.waits.waits += 1
            self.waits.seconds += time.monotonic() - started
        return True

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@dataclass
class _Queued:
    fn: WriteFn
    done: asyncio.Future[tuple[Any, list[Callable[[], object]]]]
    callbacks: list[Callable[[], object]] = field(default_factory=list)
    settle: bool = True
    result: Any = None
    error: BaseException | None = None


class SQLiteWriter:
    """Runs write functions in shared transactions on ``engine`` (pool of one connection),
    always from the same thread. ``callbacks_key``: the connection ``info`` key under which
    each function finds its own list of after-commit callbacks."""

    def __init__(
        self,
        engine: Engine,
        lock: asyncio.Lock,
        callbacks_key: str,
        process_lock: ProcessLock | None = None,
    ) -> None:
        self._engine = engine
        self._lock = lock
        self._process_lock = process_lock
        self._callbacks_key = callbacks_key
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
        self._queue: list[_Queued] = []
        self._flusher: asyncio.Future[None] | None = None

    @property
    def engine(self) -> Engine:
        return self._engine

    async def run(
        self, fn: WriteFn, *, settle: bool = True
    ) -> tuple[Any, list[Callable[[], object]]]:
        """``fn``'s result and the callbacks it registered, once its transaction committed;
        raises what ``fn`` raised (its writes rolled back) or what failed the transaction.
        A caller cancelled meanwhile does not take the others' write with it. ``settle=False``:
        a write that should not wait for others to join it after a commit (one of a backlog
        written in bounded transactions, one after the other)."""
        queued = _Queued(fn, asyncio.get_running_loop().create_future(), settle=settle)
        self._queue.append(queued)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush())
        return await asyncio.shield(queued.done)

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        # Woken from idle by one write: the others of the same requests (a stored response's
        # rows, queued a loop round or two after its replay record) join its transaction.
        await self._settle()
        while self._queue:
            batch, self._queue = self._queue, []
            async with self._lock:
                # Shielded: the thread finishes the transaction whatever happens, and the lock
                # is held until it has (no other write may find the file locked by us).
                ran = loop.run_in_executor(self._thread, self._transaction, batch)
                try:
                    await asyncio.shield(ran)
                except BaseException as exc:  # BEGIN or COMMIT failed: nothing was written
                    await asyncio.wait([ran])
                    for queued in batch:
                        if not queued.done.done():
                            queued.done.set_exception(exc)
                    batch = []
            for queued in batch:
                if queued.done.done():
                    continue
                if queued.error is not None:
                    queued.done.set_exception(queued.error)
                else:
                    queued.done.set_result((queued.result, queued.callbacks))
            # The writers whose batch just committed (the replay writer, the responses store:
            # each keeps one batch in flight) queue their next one a few loop rounds later.
            # Waiting for them makes one transaction of their batches: otherwise they take
            # turns, one commit each, and a stored response waits for two. A write queued
            # with settle=False ends the wait: under full load a loop round is long, and a
            # backlog of bounded transactions would wait those rounds between every two.
            await self._settle()

    async def _settle(self) -> None:
        """Let the loop run :data:`SETTLE_ROUNDS` rounds, or fewer when a write that should
        not wait (``settle=False``) is queued."""
        for _ in range(SETTLE_ROUNDS):
            if any(not queued.settle for queued in self._queue):
                return
            await asyncio.sleep(0)

    def _transaction(self, batch: list[_Queued]) -> None:
        """On the writer thread: one transaction for the batch (between the other processes'
        under the process lock)."""
        if self._process_lock is None or not self._process_lock.acquire():
            self._write(batch)
            return
        try:
            self._write(batch)
        finally:
            self._process_lock.release()

    def _write(self, batch: list[_Queued]) -> None:
        if len(batch) > 1 and self._write_together(batch):
            return
        with self._engine.begin() as conn:
            if len(batch) == 1:  # alone: its failure is the transaction's
                self._call(conn, batch[0])
                return
            for queued in batch:
                # Savepoints by plain SQL under one name: SQLAlchemy's begin_nested() names
                # each one anew, which compiles two statements per write every time.
                conn.exec_driver_sql(f"SAVEPOINT {_SAVEPOINT}")
                try:
                    self._call(conn, queued)
                except Exception as exc:  # rolled back to its savepoint; the others go on
                    conn.exec_driver_sql(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
                    queued.error = exc
                    queued.callbacks.clear()
                conn.exec_driver_sql(f"RELEASE SAVEPOINT {_SAVEPOINT}")

    def _write_together(self, batch: list[_Queued]) -> bool:
        """The writes in one transaction without savepoints (two statements fewer each, and
        each statement is a turn of the GIL for this thread under load); False, with nothing
        written, when one of them raised. A failed ``BEGIN`` or ``COMMIT`` raises."""
        failed = False
        try:
            with self._engine.begin() as conn:
                for queued in batch:
                    try:
                        self._call(conn, queued)
                    except Exception:
                        failed = True
                        raise
        except Exception:
            if not failed:
                raise
            for queued in batch:  # rolled back: they run again, each in a savepoint
                queued.result = None
                queued.callbacks.clear()
            return False
        return True

    def _call(self, conn: Connection, queued: _Queued) -> None:
        conn.info[self._callbacks_key] = queued.callbacks
        try:
            queued.result = queued.fn(conn)
        finally:
            conn.info.pop(self._callbacks_key, None)

    async def close(self) -> None:
        """Wait for queued writes, close the connection on its own thread, end the thread."""
        if self._flusher is not None and not self._flusher.done():
            await asyncio.wait([self._flusher])
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._engine.dispose)
        if self._process_lock is not None:
            await loop.run_in_executor(self._thread, self._process_lock.close)
        self._thread.shutdown()
