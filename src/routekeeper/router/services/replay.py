"""The replay recorder: never blocks or fails a request.

Requests hand their record to :meth:`ReplayRecorder.start` and their outcome to
:meth:`finish`; both only touch an in-memory map bounded by ``replay.queue_max``. A background
task flushes that map every ``replay.flush_interval_ms`` (sooner when it fills up) in one
transaction per batch; a record started and finished between two flushes is inserted once,
already final. A full map or a failed flush drops records and counts them by reason
(``queue_full``, ``db_unavailable``); :meth:`stop` flushes what is left (graceful shutdown)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field, replace
from typing import Any

from routekeeper.contract.errors import StorageError
from routekeeper.contract.replay import DropReason, ReplayRecord
from routekeeper.storage.replay_store import ReplayStore

log = logging.getLogger(__name__)

FLUSH_BATCH = 500


@dataclass
class _Pending:
    record: ReplayRecord | None
    """Not yet inserted (None: inserted by an earlier flush, only ``changes`` are pending)."""
    changes: dict[str, Any] = field(default_factory=dict)


class ReplayRecorder:
    def __init__(
        self, store: ReplayStore, *, enabled: bool, queue_max: int, flush_interval_ms: int
    ) -> None:
        self.store = store
        self.enabled = enabled
        self.queue_max = queue_max
        self.flush_interval = flush_interval_ms / 1000
        self.dropped: dict[str, int] = {reason.value: 0 for reason in DropReason}
        self.written = 0
        self._pending: dict[str, _Pending] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._flush_lock = asyncio.Lock()
        self._last_error: str | None = None
        self._stopping = False

    @property
    def queued(self) -> int:
        return len(self._pending)

    def _drop(self, reason: DropReason, count: int = 1) -> None:
        self.dropped[reason.value] += count

    def start(self, record: ReplayRecord) -> None:
        """Queue a new (``in_progress``) record. Never raises, never waits."""
        if not self.enabled:
            return
        if len(self._pending) >= self.queue_max:
            self._drop(DropReason.QUEUE_FULL)
            return
        self._pending[record.id] = _Pending(record)
        if len(self._pending) >= FLUSH_BATCH:
            self._wake.set()

    def finish(self, record_id: str, **changes: Any) -> None:
        """Queue the final state of a record. Never raises, never waits."""
        if not self.enabled:
            return
        pending = self._pending.get(record_id)
        if pending is not None:
            if pending.record is not None:
                pending.record = replace(pending.record, **changes)
            else:
                pending.changes.update(changes)
            return
        if len(self._pending) >= self.queue_max:
            self._drop(DropReason.QUEUE_FULL)
            return
        self._pending[record_id] = _Pending(None, dict(changes))

    def begin(self) -> None:
        if self.enabled and self._task is None:
            self._task = asyncio.create_task(self._run(), name="replay writer")

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.flush_interval):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
            except Exception:  # the writer must outlive any one bad batch
                log.exception("replay flush failed")

    async def flush(self) -> int:
        """Write everything queued so far; returns how many records it stored."""
        async with self._flush_lock:
            if not self._pending:
                return 0
            batch, self._pending = self._pending, {}
            try:
                return await self._write(batch)
            except asyncio.CancelledError:
                # Cancelled mid-batch (the caller's deadline): put it back for whoever
                # flushes next rather than lose it silently.
                self._requeue(batch)
                raise

    def _requeue(self, batch: dict[str, _Pending]) -> None:
        """Put an unwritten batch back in front of what arrived since, merging updates."""
        merged = dict(batch)
        for record_id, later in self._pending.items():
            earlier = merged.get(record_id)
            if earlier is None:
                merged[record_id] = later
            elif earlier.record is not None:
                earlier.record = replace(earlier.record, **later.changes)
            else:
                earlier.changes.update(later.changes)
        self._pending = merged

    async def _write(self, batch: dict[str, _Pending]) -> int:
        inserts = [p.record for p in batch.values() if p.record is not None]
        updates = [(rid, p.changes) for rid, p in batch.items() if p.record is None]
        try:
            await self.store.write_batch(inserts, updates)
        except StorageError as exc:
            self._drop(DropReason.DB_UNAVAILABLE, len(batch))
            if self._last_error is None:
                log.warning("replay records dropped, storage failed: %s", exc)
            self._last_error = str(exc)
            return 0
        if self._last_error is not None:
            log.info("replay records are stored again")
        self._last_error = None
        self.written += len(batch)
        return len(batch)

    async def stop(self) -> None:
        """Stop the background writer and flush what is queued (SIGTERM). The writer is
        never cancelled in the middle of a batch: it finishes it, then the rest is flushed."""
        task, self._task = self._task, None
        self._stopping = True
        self._wake.set()
        if task is not None:
            await task
        await self.flush()
