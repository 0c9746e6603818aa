"""The ``responses`` and ``response_items`` surfaces: stored responses and their items.

A response is inserted ``in_progress`` together with its input items and finished once,
together with its output items (a lifecycle move), each atomically. A plain request's start
(deferred: nobody waits for it) waits briefly for its finish, and a finish that finds its start
not yet taken by a flush makes both one insert of the final response. Concurrent writes share a
transaction (group commit): each caller queues its write and waits for the commit that carries
it; a write the database refuses (or that finds its response gone) fails alone. A turn's
context is its chain of previous responses, read in one recursive statement whatever the
chain's depth. Deleting or pruning a response deletes its items (ON DELETE CASCADE).
Recovery fails the responses a dead replica left ``in_progress``."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection

from routekeeper.contract.errors import (
    NotFound,
    StorageError,
    StorageUnavailable,
)
from routekeeper.contract.pages import Page, SortOrder
from routekeeper.contract.responses import (
    RESPONSE_LIFECYCLE,
    RESTART_ERROR,
    ItemKind,
    ResponseFilters,
    ResponseItemRecord,
    ResponseRecord,
    ResponseStatus,
)
from routekeeper.storage.conversations_store import append_turn
from routekeeper.storage.database import Database
from routekeeper.storage.dialect import Dialect
from routekeeper.storage.records import from_row, to_row, updated
from routekeeper.storage.recovery import RecoveryContext, RecoveryReport, RecoveryStep
from routekeeper.storage.responses_context import MEMO_RESPONSES, ContextMemo, Convert
from routekeeper.storage.responses_writes import (
    Inserting,
    Queued,
    Write,
    inserting,
    run_batch,
    settle,
)
from routekeeper.storage.schema.responses import response_items, responses
from routekeeper.storage.surface_store import RetentionRule, SurfaceStore
from routekeeper.storage.types import utcnow


def _response(row: Any) -> ResponseRecord:
    return from_row(ResponseRecord, row)


def _item(row: Any) -> ResponseItemRecord:
    return from_row(ResponseItemRecord, row)


# How long a deferred start (a plain request's: nobody waits for it) waits for its finish
# before it is written on its own; as long as replay records' starts wait by default
# (``replay.flush_interval_ms``). An answer faster than this costs one write, not two.
DEFERRED_START_SECONDS = 0.1


class ResponsesStore(SurfaceStore):
    tables = {"responses": (responses,), "response_items": (response_items,)}
    records = {responses.name: ResponseRecord, response_items.name: ResponseItemRecord}
    lifecycle_columns = {"responses": "status"}
    retention = {"responses": RetentionRule(responses, age_column="created_at")}

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self._queue: list[Queued] = []
        self._writing: list[Queued] = []  # the batch the flush is committing
        self._flusher: asyncio.Future[None] | None = None
        # Deferred starts not yet due, by response id (in order of arrival).
        self._deferred: dict[str, Queued] = {}
        self._timer: asyncio.TimerHandle | None = None
        # Starts no flush took yet (deferred or queued), by response id: a finish arriving
        # now replaces the start with one write of the final response.
        self._starts: dict[str, Queued] = {}
        # Finished responses' turns (a per-replica memo, checked before each use), and the
        # starts of responses not finished yet, whose input a finish adds to the memo.
        self._memo = ContextMemo()
        self._open: OrderedDict[str, Inserting] = OrderedDict()

    async def _grouped(
        self, write: Write, *, start: str | None = None, deferred: bool = False
    ) -> Any:
        """Run ``write`` in a transaction shared with whatever else is queued (group commit);
        returns its result once committed. The flush runs in a task of its own, so a caller
        that is cancelled never takes the others' commit with it. A ``deferred`` start waits
        up to :data:`DEFERRED_START_SECONDS` before it is queued."""
        return await asyncio.shield(self._queue_write(write, start=start, deferred=deferred))

    def _queue_write(
        self, write: Write, *, start: str | None = None, deferred: bool = False
    ) -> asyncio.Future[Any]:
        """Queue ``write`` (see :meth:`_grouped`): the future its commit settles."""
        loop = asyncio.get_running_loop()
        queued = Queued(write, loop.create_future(), start)
        if start is not None:
            self._starts[start] = queued
        if deferred and start is not None:
            queued.due = loop.time() + DEFERRED_START_SECONDS
            self._deferred[start] = queued
            if self._timer is None:
                self._timer = loop.call_at(queued.due, self._release_due)
        else:
            self._queue.append(queued)
            self._kick()
        return queued.done

    def _kick(self) -> None:
        if self._queue and (self._flusher is None or self._flusher.done()):
            self._flusher = asyncio.ensure_future(self._flush())
            self._flusher.add_done_callback(self._flush_ended)

    def _release_due(self) -> None:
        """Queue the deferred starts that are due; wake again for the next one."""
        loop = asyncio.get_running_loop()
        self._timer = None
        now = loop.time()
        for response_id, queued in list(self._deferred.items()):
            if queued.due > now:
                self._timer = loop.call_at(queued.due, self._release_due)
                break
            del self._deferred[response_id]
            self._queue.append(queued)
        self._kick()

    async def _flush(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            self._writing = batch
            for queued in batch:  # taken: a finish now waits for their commit
                if queued.start is not None:
                    self._starts.pop(queued.start, None)
            try:
                results = await self._run(batch)
            except Exception:
                # One write spoilt the transaction (a refused value, a conflict) or the
                # database failed: each write again in its own, so it fails alone.
                for queued in batch:
                    settle(queued.done, await self._run_alone(queued))
                continue
            for queued, result in zip(batch, results, strict=True):
                settle(queued.done, result)
        self._writing = []

    def _flush_ended(self, flusher: asyncio.Future[None]) -> None:
        """A flush cancelled (shutdown), even before it began, or broken: no caller waits
        forever for a commit that will not come; what was not settled fails."""
        if flusher is not self._flusher or (
            not flusher.cancelled() and flusher.exception() is None
        ):
            return
        error = StorageUnavailable("the response writer stopped before this write was committed")
        for queued in [*self._writing, *self._queue]:
            settle(queued.done, error)
        self._writing, self._queue = [], []
        self._starts.clear()

    async def _run_alone(self, queued: Queued) -> Any:
        """One write in a transaction of its own: its result, or the exception it raised.
        An insert refused because this replica's response is already there was carried by
        the shared commit that reported a failure (a commit whose answer was lost): stored."""
        try:
            return (await self._run([queued]))[0]
        except Exception as exc:
            write = queued.write
            if isinstance(write, Inserting) and await self._stored_by_us(write.record):
                return None
            return exc

    async def _stored_by_us(self, record: ResponseRecord) -> bool:
        try:
            async with self.db.read() as conn:
                found = await conn.execute(
                    select(responses.c.replica_id).where(responses.c.id == record.id)
                )
                row = found.first()
        except StorageError:
            return False
        return row is not None and row.replica_id == record.replica_id

    async def _run(self, batch: list[Queued]) -> list[Any]:
        writes = [queued.write for queued in batch]
        return await self.db.run_write(lambda conn: run_batch(conn, writes))

    def recovery_steps(self) -> Sequence[RecoveryStep]:
        return (
            RecoveryStep(
                surface="responses",
                description="responses in progress at a crash become failed (server_error)",
                run=self.recover,
                after_crash=True,
            ),
        )

    async def recover(self, ctx: RecoveryContext, dry_run: bool) -> RecoveryReport:
        """Responses left ``in_progress`` by replicas that are not live any more become
        ``failed`` with the restart error."""
        live = await ctx.live_replica_ids()
        async with self.db.read() as conn:
            rows = await conn.execute(
                select(responses.c.replica_id)
                .where(responses.c.status == ResponseStatus.IN_PROGRESS.value)
                .distinct()
            )
            dead = [r[0] for r in rows if r[0] not in live]
        if dry_run:
            found = await self._count_in_flight(dead)
            findings = [f"{found} response(s) in progress from {', '.join(dead)}"] if found else []
            return RecoveryReport("responses", {"failed": found}, True, findings)
        return RecoveryReport("responses", {"failed": await self.fail_in_flight(dead)}, False)

    async def _count_in_flight(self, replica_ids: list[str]) -> int:
        if not replica_ids:
            return 0
        async with self.db.read() as conn:
            rows = await conn.execute(
                select(responses.c.id)
                .where(responses.c.status == ResponseStatus.IN_PROGRESS.value)
                .where(responses.c.replica_id.in_(replica_ids))
            )
            return len(rows.all())

    async def fail_in_flight(
        self, replica_ids: Iterable[str], *, at: datetime | None = None
    ) -> int:
        """Responses the given (dead) replicas left ``in_progress`` become ``failed`` with
        :data:`RESTART_ERROR` (a move of the response lifecycle). Idempotent."""
        assert RESPONSE_LIFECYCLE.allows(ResponseStatus.IN_PROGRESS, ResponseStatus.FAILED)
        ids = list(replica_ids)
        if not ids:
            return 0
        async with self.db.write() as conn:
            result = await conn.execute(
                update(responses)
                .where(responses.c.status == ResponseStatus.IN_PROGRESS.value)
                .where(responses.c.replica_id.in_(ids))
                .values(
                    status=ResponseStatus.FAILED.value,
                    error=RESTART_ERROR,
                    completed_at=at or utcnow(),
                )
            )
        return int(result.rowcount)

    # -- writes ----------------------------------------------------------------------------

    async def start(
        self,
        record: ResponseRecord,
        items: Sequence[ResponseItemRecord],
        *,
        deferred: bool = False,
    ) -> None:
        """Insert an ``in_progress`` response and its input items, in one transaction;
        returns once committed. ``deferred`` (a start nobody waits for: the client learns the
        id from the finish): the start waits up to :data:`DEFERRED_START_SECONDS` for its
        finish, which then makes both one write of the final response."""
        await asyncio.shield(self.start_soon(record, items, deferred=deferred))

    def start_soon(
        self, record: ResponseRecord, items: Sequence[ResponseItemRecord], *, deferred: bool
    ) -> asyncio.Future[Any]:
        """:meth:`start` queued now, without a task: the future its commit settles."""
        write = inserting(record, items)
        self._open[record.id] = write
        if len(self._open) > MEMO_RESPONSES:
            self._open.popitem(last=False)
        return self._queue_write(write, start=record.id, deferred=deferred)

    async def finish(
        self,
        response_id: str,
        status: ResponseStatus,
        items: Sequence[ResponseItemRecord],
        *,
        usage: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
        incomplete_details: dict[str, Any] | None = None,
        completed_at: datetime | None = None,
        conversation_id: str | None = None,
    ) -> ResponseRecord:
        """Move a response (one this replica started) from ``in_progress`` to ``status`` and
        add its output items, atomically (NotFound when it was deleted meanwhile,
        InvalidTransition when it was finished already, e.g. by recovery). When its start is
        still queued (it finished before a flush took it), start and finish become one write
        of the final response. ``conversation_id``: the same transaction appends the turn
        (every item of the response, input then output) to that conversation
        (``conversations_store.append_turn``; nothing when it was deleted meanwhile)."""
        values = {
            "usage": usage,
            "error": error,
            "incomplete_details": incomplete_details,
            "completed_at": completed_at or utcnow(),
        }
        append_to = None if conversation_id is None else (self.db.dialect, conversation_id)
        started = self._open.pop(response_id, None)
        queued = self._starts.pop(response_id, None)
        if queued is not None:
            final = await self._finish_queued(queued, response_id, status, items, values, append_to)
            self._remember(final, started, items)
            return final

        def write(conn: Connection) -> ResponseRecord:
            _, row = self._transition_in(
                conn,
                responses,
                response_id,
                RESPONSE_LIFECYCLE,
                status,
                state_column="status",
                values=values,
                event=None,
                what="response",
            )
            if items:
                conn.execute(insert(response_items), [to_row(i) for i in items])
            if append_to is not None:
                append_turn(conn, *append_to, response_id=response_id, tenant_id=row.tenant_id)
            return _response(row)

        result = await self._grouped(write)
        if isinstance(result, Exception):
            raise result
        self._remember(result, started, items)
        return result  # type: ignore[no-any-return]

    def _remember(
        self,
        final: ResponseRecord,
        started: Inserting | None,
        items: Sequence[ResponseItemRecord],
    ) -> None:
        """A committed finish: the response's turn goes into the context memo."""
        if started is not None:
            self._memo.finished(
                final.id, final.previous_response_id, final.tenant_id, [*started.items, *items]
            )

    async def _finish_queued(
        self,
        queued: Queued,
        response_id: str,
        status: ResponseStatus,
        items: Sequence[ResponseItemRecord],
        values: dict[str, Any],
        append_to: tuple[Dialect, str] | None,
    ) -> ResponseRecord:
        started = queued.write
        assert isinstance(started, Inserting)
        RESPONSE_LIFECYCLE.check(response_id, started.record.status, status)
        final = updated(started.record, status=status, **values)
        queued.write = inserting(final, [*started.items, *items], append_to)
        if self._deferred.pop(response_id, None) is not None:
            self._queue.append(queued)  # a finish is waited for: no more waiting
            self._kick()
        await asyncio.shield(queued.done)
        return final

    async def delete(self, response_id: str, *, tenant_id: str, not_before: datetime) -> None:
        """Delete a response and (by cascade) its items; NotFound when there is none (or it
        has expired)."""
        async with self.db.write() as conn:
            result = await conn.execute(
                delete(responses)
                .where(responses.c.id == response_id)
                .where(responses.c.tenant_id == tenant_id)
                .where(responses.c.created_at >= not_before)
            )
        self._memo.forget(response_id)
        if result.rowcount == 0:
            raise NotFound(f"No response found with id '{response_id}'.")

    # -- reads -----------------------------------------------------------------------------

    async def get(
        self, response_id: str, *, tenant_id: str, not_before: datetime
    ) -> tuple[ResponseRecord, list[ResponseItemRecord]]:
        """A response and its items in order (two statements); NotFound when there is none
        or it has expired (``created_at`` before ``not_before``)."""
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    select(responses)
                    .where(responses.c.id == response_id)
                    .where(responses.c.tenant_id == tenant_id)
                    .where(responses.c.created_at >= not_before)
                )
            ).one_or_none()
            if row is None:
                raise NotFound(f"No response found with id '{response_id}'.")
            items = await conn.execute(
                select(response_items)
                .where(response_items.c.response_id == response_id)
                .order_by(response_items.c.position)
            )
            return _response(row), [_item(i) for i in items]

    async def context(
        self,
        response_id: str,
        *,
        tenant_id: str,
        not_before: datetime,
        convert: Convert = list,
    ) -> list[Any]:
        """Every item of ``response_id`` and of the responses it continues, oldest turn first
        (as ``convert`` makes them, turn by turn: a pure function of the items), in one
        statement whatever the depth: the chain's items as this replica's memo holds them once
        a walk of the chain (without items) finds every response of it there, or else the walk
        joined with the items (``responses_context``). NotFound naming the first response of
        the chain that is missing (never stored, deleted, or expired)."""
        return await self._memo.context(
            self.db, response_id, convert, tenant_id=tenant_id, not_before=not_before
        )

    async def input_items(
        self,
        response_id: str,
        *,
        tenant_id: str,
        not_before: datetime,
        limit: int,
        order: SortOrder,
        after: str | None,
    ) -> Page[ResponseItemRecord]:
        """One keyset page of a response's input items by id (ids grow with position within
        a response); NotFound when the response is not there."""
        async with self.db.read() as conn:
            found = (
                await conn.execute(
                    select(responses.c.id)
                    .where(responses.c.id == response_id)
                    .where(responses.c.tenant_id == tenant_id)
                    .where(responses.c.created_at >= not_before)
                )
            ).one_or_none()
        if found is None:
            raise NotFound(f"No response found with id '{response_id}'.")
        query = (
            select(response_items)
            .where(response_items.c.response_id == response_id)
            .where(response_items.c.kind == ItemKind.INPUT.value)
        )
        return await self._page(
            query, response_items.c.id, _item, limit=limit, order=order, after=after, before=None
        )

    async def list_responses(
        self,
        filters: ResponseFilters,
        *,
        limit: int,
        order: SortOrder,
        after: str | None = None,
        before: str | None = None,
    ) -> Page[ResponseRecord]:
        """Responses by id (newest first by default), keyset pages."""
        return await self._page(
            apply_filters(filters, select(responses), self.db.dialect),
            responses.c.id,
            _response,
            limit=limit,
            order=order,
            after=after,
            before=before,
        )


def apply_filters(filters: ResponseFilters, query: Any, dialect: Dialect) -> Any:
    c = responses.c
    if filters.tenant_id is not None:
        query = query.where(c.tenant_id == filters.tenant_id)
    if filters.model is not None:
        query = query.where(c.model == filters.model)
    if filters.status is not None:
        query = query.where(c.status == filters.status.value)
    if filters.since is not None:
        query = query.where(c.created_at >= filters.since)
    if filters.until is not None:
        query = query.where(c.created_at < filters.until)
    if filters.conversation_id is not None:
        query = query.where(c.conversation_id == filters.conversation_id)
    return query
