"""The replay recorder: never fails a request, and in ``acknowledged`` mode never lets a
client see the end of a response whose record is not committed.

Requests hand their record to :meth:`ReplayRecorder.start` and their outcome to
:meth:`finish`; both only touch an in-memory map. One background task writes that map in one
transaction per batch; a record started and finished between two writes is inserted once,
already final.

When is a batch written? Start records wait for the next flush (every
``replay.flush_interval_ms``, sooner when many are queued). A finish in ``acknowledged`` mode
wakes the writer at once and returns a future that resolves when its record is committed
(group commit: whatever else is pending goes into the same transaction, so concurrent
requests share one fsync). ``batch`` mode flushes finishes on the timer too. A flush writes
the FLUSH_BATCH oldest records per transaction until what was queued when it began is written.

What is never lost silently:
- A failed write because the database is unreachable keeps its records queued and retries;
  finishes of records already stored are always kept (they are bounded by the requests in
  flight), new records up to ``replay.queue_max``; what does not fit is dropped and counted.
- A batch the database refuses because of one record's value is split until that record is
  alone: the others are committed, the record is counted as ``value_refused`` (a refused
  finish is still stored with its state, reason and times, so the record does not stay
  ``in_progress``).
- :meth:`stop` writes what is left (graceful shutdown)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from routekeeper.contract.errors import SchemaNotReady, StorageUnavailable
from routekeeper.contract.replay import DropReason, LifecycleState, ReplayRecord
from routekeeper.storage.records import updated
from routekeeper.storage.replay_store import ReplayStore

log = logging.getLogger(__name__)

FLUSH_BATCH = 500
# Errors that say nothing about the records (unreachable, busy, a full disk, no schema): keep
# them and retry. Any other error is split until it is pinned on one record, which is refused,
# so one poisonous record can never stall the writer.
TRANSIENT = (StorageUnavailable, SchemaNotReady)
STOP_RETRY_SECONDS = 30.0  # stop() retries an unreachable database at most this long
# What a finish keeps when the database refused its other values.
MINIMAL_FINISH = ("lifecycle_state", "terminal_reason", "completed_at", "ttfb_ms", "total_ms")


@dataclass
class _Pending:
    record: ReplayRecord | None
    """Not yet inserted (None: inserted by an earlier write, only ``changes`` are pending)."""
    changes: dict[str, Any] = field(default_factory=dict)
    waiters: list[asyncio.Future[bool | None]] = field(default_factory=list)

    @property
    def final(self) -> bool:
        if self.record is not None:
            return self.record.lifecycle_state is not LifecycleState.IN_PROGRESS
        return "lifecycle_state" in self.changes

    def merge(self, later: _Pending) -> None:
        """Apply what arrived for the same record after this entry was taken."""
        if self.record is not None:
            self.record = updated(self.record, **later.changes)
        else:
            self.changes.update(later.changes)
        self.waiters += later.waiters

    def resolve(self, durable: bool) -> None:
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(durable)
        self.waiters = []


class ReplayRecorder:
    """The ``router_replay`` surface's component (see ``runtime.components``)."""

    surface = "router_replay"

    def __init__(
        self,
        store: ReplayStore,
        *,
        enabled: bool,
        queue_max: int,
        flush_interval_ms: int,
        durability: str = "acknowledged",
        ack_timeout_ms: int = 500,
    ) -> None:
        self.store = store
        self.enabled = enabled
        self.queue_max = queue_max
        self.flush_interval = flush_interval_ms / 1000
        self.acknowledged = durability == "acknowledged"
        self.ack_timeout = ack_timeout_ms / 1000
        self.dropped: dict[str, int] = {reason.value: 0 for reason in DropReason}
        self.ack_timeouts = 0
        """Responses sent before their record was known to be committed."""
        self.written = 0
        """Record writes committed (a start and its finish written apart count twice)."""
        self.batches = 0
        """Transactions that committed writes (written / batches: writes per commit)."""
        self._pending: dict[str, _Pending] = {}
        self._writing = 0
        """Records of the batch being written now (taken from ``_pending``, not committed)."""
        # Records accepted and not yet stored final: a finish is kept only for these.
        self._live: set[str] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._flush_lock = asyncio.Lock()
        self.degraded: str | None = None
        """Why the last write failed while the database was unreachable (None: it works)."""
        self._stopping = False

    @property
    def queued(self) -> int:
        """Records accepted and not committed yet: waiting, or in the batch being written
        (0 means every record accepted so far is committed or was counted as dropped)."""
        return len(self._pending) + self._writing

    def _drop(self, reason: DropReason, count: int = 1) -> None:
        self.dropped[reason.value] += count

    def start(self, record: ReplayRecord) -> bool:
        """Queue a new (``in_progress``) record; False when it was dropped (queue full).
        Never raises, never waits."""
        if not self.enabled:
            return False
        if len(self._pending) >= self.queue_max:
            self._drop(DropReason.QUEUE_FULL)
            return False
        self._pending[record.id] = _Pending(record)
        self._live.add(record.id)
        if len(self._pending) >= FLUSH_BATCH:
            self._wake.set()
        return True

    def finish(self, record_id: str, **changes: Any) -> asyncio.Future[bool | None]:
        """Queue the final state of a record. Never raises, never waits: returns a future that
        resolves to True once the record is committed, False when it will not be before the
        answer (refused; ``batch`` mode or a known outage: already resolved, nobody should
        wait), None when the record was never accepted (dropped and counted already)."""
        done: asyncio.Future[bool | None] = asyncio.get_running_loop().create_future()
        if not self.enabled or record_id not in self._live:
            done.set_result(None)  # never accepted, or dropped (and counted) already
            return done
        pending = self._pending.get(record_id)
        if pending is None:
            pending = self._pending[record_id] = _Pending(None)
        pending.merge(_Pending(None, dict(changes)))
        if self.acknowledged and self.degraded is None and not self._stopping:
            pending.waiters.append(done)
            self._wake.set()
        else:
            done.set_result(False)
        return done

    async def acknowledge(self, done: asyncio.Future[bool | None]) -> bool:
        """Wait (at most ``replay.ack_timeout_ms``) for a finish to be committed; False, and
        counted as ``ack_timeout``, when the answer goes out without that (a record that was
        dropped is counted as dropped only)."""
        if not self.enabled:
            return False
        if not done.done():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.ack_timeout):
                    await asyncio.shield(done)
        result = done.result() if done.done() and not done.cancelled() else False
        if result is None:
            return False
        if not result and self.acknowledged:
            self.ack_timeouts += 1
        return result

    def will_acknowledge(self, record_id: str) -> bool:
        """Whether a finish of this record would be waited for now (what a stream's
        header promises at its first byte)."""
        return (
            self.enabled
            and self.acknowledged
            and self.degraded is None
            and not self._stopping
            and record_id in self._live
        )

    # -- what it reports -------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The writer's state on the router_replay row of ``/api/status``: ``written`` record
        writes in ``batches`` transactions (a start and its finish written apart are two
        writes), ``dropped`` by reason, ``ack_timeout`` answers sent before their record was
        known committed, ``storage`` ``degraded`` while writes fail and records wait."""
        return {
            "enabled": self.enabled,
            "queued": self.queued,
            "written": self.written,
            "batches": self.batches,
            "dropped": dict(self.dropped),
            "durability": "acknowledged" if self.acknowledged else "batch",
            "ack_timeout": self.ack_timeouts,
            "storage": "ok" if self.degraded is None else "degraded",
        }

    def metrics(self) -> Iterable[Metric]:
        dropped = GaugeMetricFamily(
            "routekeeper_replay_dropped_records",
            "Replay records not stored since start, by reason (queue_full, db_unavailable, "
            "value_refused).",
            labels=["reason"],
        )
        for reason, count in self.dropped.items():
            dropped.add_metric([reason], count)
        yield dropped
        yield GaugeMetricFamily(
            "routekeeper_replay_ack_timeouts",
            "Answers sent before their replay record was known to be committed, since start.",
            value=self.ack_timeouts,
        )
        yield GaugeMetricFamily(
            "routekeeper_replay_queued_records",
            "Replay records waiting for the writer.",
            value=self.queued,
        )

    # -- the writer ------------------------------------------------------------------------

    def begin(self) -> None:
        if self.enabled and self._task is None:
            self._task = asyncio.create_task(self._run(), name="replay writer")

    async def _run(self) -> None:
        while not self._stopping:
            if self.degraded is not None:
                # While the database is unreachable, retry on the timer only: a wake per
                # request would hammer a database that is down.
                self._wake.clear()
            if not self._wake.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.flush_interval):
                        await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
            except Exception:  # the writer must outlive any one bad batch
                log.exception("replay flush failed")

    async def flush(self) -> int:
        """Write everything queued so far, oldest first, in transactions of at most
        FLUSH_BATCH records; returns how many records it stored. Records queued meanwhile
        wait for the next flush; a write that fails because the database is unreachable ends
        it (its records are queued again)."""
        async with self._flush_lock:
            stored = 0
            for _ in range(-(-len(self._pending) // FLUSH_BATCH)):
                if not self._pending:
                    break
                stored += await self._flush_one()
                if self.degraded is not None:
                    break
            return stored

    async def _flush_one(self) -> int:
        """Write the FLUSH_BATCH oldest queued records in one transaction. Taking no more
        keeps a backlog (a burst, a database that was away) from becoming one long
        transaction, and leaves the newer records in the map, where their finishes still
        merge into them (one insert of the final record rather than an insert and an update)."""
        if len(self._pending) <= FLUSH_BATCH:
            batch, self._pending = self._pending, {}
        else:
            batch = dict(itertools.islice(self._pending.items(), FLUSH_BATCH))
            for record_id in batch:
                del self._pending[record_id]
        self._writing = len(batch)
        try:
            return await self._write(list(batch.items()))
        except asyncio.CancelledError:
            # Cancelled mid-batch (the caller's deadline): put it back for whoever flushes
            # next rather than lose it silently.
            self._requeue(batch)
            raise
        finally:
            self._writing = 0

    def _requeue(self, batch: dict[str, _Pending]) -> None:
        """Put an unwritten batch back in front of what arrived since, merging updates.
        Beyond queue_max, the newest records not yet stored at all are dropped (counted);
        finishes of stored records are kept, so those records do not stay in_progress."""
        merged = dict(batch)
        for record_id, later in self._pending.items():
            earlier = merged.get(record_id)
            if earlier is None:
                merged[record_id] = later
            else:
                earlier.merge(later)
        excess = len(merged) - self.queue_max
        if excess > 0:
            for record_id in reversed(list(merged)):
                if excess <= 0:
                    break
                entry = merged[record_id]
                if entry.record is None:
                    continue
                del merged[record_id]
                self._live.discard(record_id)
                entry.resolve(False)
                self._drop(DropReason.DB_UNAVAILABLE)
                excess -= 1
        self._pending = merged

    async def _write(self, items: list[tuple[str, _Pending]]) -> int:
        """Write ``items`` in one transaction; when the database refuses the batch for a
        reason tied to a record, split it until that record is alone."""
        stored = 0
        parts = [items]
        while parts:
            part = parts.pop()
            try:
                missing = await self._write_part(part)
            except TRANSIENT as exc:
                rest = [pair for p in parts for pair in p]
                self._requeue(dict(part + rest))
                self._unavailable(str(exc))
                return stored
            except Exception as exc:  # refused values, or a value the driver cannot convert
                refused = exc
            else:
                stored += self._committed(part, missing)
                continue
            if len(part) == 1:
                stored += await self._refused(*part[0], refused)
                continue
            middle = len(part) // 2
            parts += [part[middle:], part[:middle]]  # the first half is written first
        return stored

    async def _write_part(self, part: list[tuple[str, _Pending]]) -> set[str]:
        """One transaction; returns the ids of updates that found no record."""
        inserts = [p.record for _, p in part if p.record is not None]
        updates = [(rid, p.changes) for rid, p in part if p.record is None]
        # Behind this batch a full one waits already: no point waiting for others to join.
        backlog = len(self._pending) >= FLUSH_BATCH
        return await self.store.write_batch(inserts, updates, backlog=backlog)

    def _committed(self, part: list[tuple[str, _Pending]], missing: set[str]) -> int:
        if self.degraded is not None:
            log.info("replay records are stored again")
            self.degraded = None
        for record_id, entry in part:
            if entry.final:
                self._live.discard(record_id)
            # A finish whose record is gone (pruned, or its start refused) is not durable.
            entry.resolve(record_id not in missing)
        self.written += len(part) - len(missing)
        self.batches += 1
        return len(part) - len(missing)

    async def _refused(self, record_id: str, entry: _Pending, exc: Exception) -> int:
        """One record the database refused on its own: counted, its answer not durable. A
        refused new record is dropped, with any finish queued for it meanwhile; a refused
        finish is stored with its state, reason and times only (retried like any write while
        the database is unreachable), so the record never stays in_progress."""
        self._drop(DropReason.VALUE_REFUSED)
        log.warning("replay record %s refused by the database: %s", record_id, exc)
        entry.resolve(False)
        if entry.record is not None:
            self._live.discard(record_id)
            later = self._pending.pop(record_id, None)
            if later is not None:
                later.resolve(False)
            return 0
        minimal = {k: v for k, v in entry.changes.items() if k in MINIMAL_FINISH}
        minimal["error"] = f"the database refused this record's details: {exc}"[:2000]
        try:
            await self.store.write_batch([], [(record_id, minimal)])
        except TRANSIENT as again:
            self._requeue({record_id: _Pending(None, minimal)})
            self._unavailable(str(again))
            return 0
        except Exception as again:
            log.warning("replay record %s: minimal finish refused too: %s", record_id, again)
            self._live.discard(record_id)
            return 0
        self._live.discard(record_id)
        self.written += 1
        return 1

    def _unavailable(self, reason: str) -> None:
        if self.degraded is None:
            log.warning("replay records kept in memory, the database failed: %s", reason)
        self.degraded = reason

    async def stop(self) -> None:
        """Stop the background writer and write what is queued (SIGTERM). The writer is never
        cancelled in the middle of a batch (a deadline on the caller cancels only its wait);
        an unreachable database is retried until the caller's deadline (at most
        STOP_RETRY_SECONDS). What is still unwritten then is counted as db_unavailable."""
        task, self._task = self._task, None
        self._stopping = True
        self._wake.set()
        loop = asyncio.get_running_loop()
        give_up = loop.time() + STOP_RETRY_SECONDS
        try:
            if task is not None:
                await asyncio.shield(task)
            await self.flush()
            while self._pending and loop.time() < give_up:
                await asyncio.sleep(self.flush_interval)
                await self.flush()
        finally:
            lost = len(self._pending)
            if lost:
                self._drop(DropReason.DB_UNAVAILABLE, lost)
                for entry in self._pending.values():
                    entry.resolve(False)
                self._pending = {}
                self._live.clear()
                log.error("replay: %d records could not be stored before stopping", lost)
