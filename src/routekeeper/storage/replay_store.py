"""The ``router_replay`` surface: one record per ``/v1`` request.

Writes arrive in batches from the recorder (one transaction per batch): new records are
inserted, finished ones updated by id. Recovery turns records a dead replica left
``in_progress`` into ``aborted`` / ``process_restart``, found through a partial index."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, literal_column, select, text, update
from sqlalchemy.engine import Connection

from routekeeper.contract.errors import InvalidRequest
from routekeeper.contract.pages import Page, SortOrder
from routekeeper.contract.replay import (
    PASS_THROUGH,
    REPLAY_LIFECYCLE,
    LifecycleState,
    ReplayFilters,
    ReplayRecord,
    TerminalReason,
)
from routekeeper.storage.database import Database
from routekeeper.storage.dialect import Dialect
from routekeeper.storage.records import from_row, plain, to_row
from routekeeper.storage.recovery import RecoveryContext, RecoveryReport, RecoveryStep
from routekeeper.storage.replay_writes import write_rows
from routekeeper.storage.schema.replay import router_replay
from routekeeper.storage.surface_store import RetentionRule, SurfaceStore
from routekeeper.storage.types import utcnow

BODY_COLUMNS = ("request_body", "response_body", "prompt_text")


def _record(row: Any) -> ReplayRecord:
    return from_row(ReplayRecord, row)


class ReplayStore(SurfaceStore):
    tables = {"router_replay": (router_replay,)}
    records = {router_replay.name: ReplayRecord}
    lifecycle_columns = {"router_replay": "lifecycle_state"}
    retention = {"router_replay": RetentionRule(router_replay, age_column="started_at")}

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        # Inserts are idempotent: a batch whose commit outcome was lost with the connection is
        # written again, and then its records replace themselves with their newer state.
        self._upsert = db.dialect.upsert(router_replay)
        # On SQLite, multi-row statements: a statement step per row is slow under load there
        # (replay_writes says why).
        self._multi_row = not db.dialect.postgres

    def recovery_steps(self) -> Sequence[RecoveryStep]:
        return (
            RecoveryStep(
                surface="router_replay",
                description="records in flight at a crash become aborted / process_restart",
                run=self.recover,
                after_crash=True,
            ),
        )

    async def recover(self, ctx: RecoveryContext, dry_run: bool) -> RecoveryReport:
        """Records left ``in_progress`` by replicas that are not live any more become
        ``aborted`` / ``process_restart``."""
        live = await ctx.live_replica_ids()
        dead = [rid for rid in await self.replicas_with_records_in_flight() if rid not in live]
        if dry_run:
            found = await self.count_in_flight(dead)
            findings = (
                [f"{found} replay record(s) in flight from {', '.join(dead)}"] if found else []
            )
            return RecoveryReport("router_replay", {"aborted": found}, True, findings)
        aborted = await self.abort_in_flight(dead)
        return RecoveryReport("router_replay", {"aborted": aborted}, False)

    async def write_batch(
        self,
        inserts: Sequence[ReplayRecord],
        updates: Sequence[tuple[str, dict[str, Any]]],
        *,
        backlog: bool = False,
    ) -> set[str]:
        """Insert new records and apply finished records' changes, in one transaction (one
        call on SQLite's writer thread: ``Database.run_write``). Updates are grouped by the
        set of columns they change (one executemany each; on SQLite, a few multi-row
        statements: ``replay_writes``). Returns the ids of updates that found no record
        (pruned, or never stored). ``backlog``: more batches are waiting behind this one, so
        its transaction starts without waiting for other writers to join it."""
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for record_id, changes in updates:
            values = plain(changes)
            groups.setdefault(tuple(sorted(values)), []).append({"_id": record_id, **values})

        def write(conn: Connection) -> set[str]:
            if self._multi_row:
                return write_rows(conn, [to_row(r) for r in inserts], groups)
            missing: set[str] = set()
            if inserts:
                conn.execute(self._upsert, [to_row(r) for r in inserts])
            if updates:
                ids = [record_id for record_id, _ in updates]
                found = conn.execute(select(router_replay.c.id).where(router_replay.c.id.in_(ids)))
                missing = set(ids) - {row[0] for row in found}
            for columns, rows in groups.items():
                statement = (
                    update(router_replay)
                    .where(router_replay.c.id == bindparam("_id"))
                    .values({c: bindparam(c) for c in columns})
                )
                conn.execute(statement, rows)
            return missing

        return await self.db.run_write(write, settle=not backlog)

    async def get(self, record_id: str, *, tenant_id: str | None = None) -> ReplayRecord:
        """One record (of ``tenant_id`` when given; None: any tenant)."""
        where = router_replay.c.tenant_id == tenant_id if tenant_id is not None else None
        return await self._one(router_replay, record_id, _record, "replay record", where=where)

    async def list_records(
        self,
        filters: ReplayFilters,
        *,
        limit: int = 20,
        order: SortOrder = SortOrder.DESC,
        after: str | None = None,
        before: str | None = None,
    ) -> Page[ReplayRecord]:
        """Summaries (bodies left out) by id, newest first by default; keyset pages."""
        return await self._page(
            summary_query(filters, self.db.dialect),
            router_replay.c.id,
            _record,
            limit=limit,
            order=order,
            after=after,
            before=before,
        )

    async def aggregate(
        self, filters: ReplayFilters, percentiles: Sequence[float] = (0.5, 0.95, 0.99)
    ) -> dict[str, Any]:
        """Counts by decision (pass-through requests under ``PASS_THROUGH``, as in
        ``/metrics``), model and lifecycle state; usage (requests, total tokens, cost) by
        tenant and by API key (``(none)``: auth off); token and cost sums (``cost`` is ``None``
        when no matching record has one), and latency
        percentiles of ``total_ms`` (continuous, as PostgreSQL's percentile_cont; on SQLite
        by ORDER BY ... OFFSET at the two ranks around each percentile), all in SQL."""
        c = router_replay.c
        out: dict[str, Any] = {}
        async with self.db.read() as conn:
            for key, column in (
                ("by_decision", c.decision),
                ("by_model", c.selected_model),
                ("by_lifecycle_state", c.lifecycle_state),
            ):
                rows = await conn.execute(
                    apply_filters(
                        filters,
                        select(column, func.count()).select_from(router_replay),
                        self.db.dialect,
                    ).group_by(column)
                )
                absent = PASS_THROUGH if key == "by_decision" else "(none)"
                out[key] = {str(value) if value is not None else absent: n for value, n in rows}
            sums = (
                await conn.execute(
                    apply_filters(
                        filters,
                        select(
                            func.count(),
                            func.sum(c.prompt_tokens),
                            func.sum(c.completion_tokens),
                            func.sum(c.total_tokens),
                            func.sum(c.cost),
                        ).select_from(router_replay),
                        self.db.dialect,
                    )
                )
            ).one()
            out["count"] = int(sums[0])
            out["tokens"] = {
                "prompt": int(sums[1] or 0),
                "completion": int(sums[2] or 0),
                "total": int(sums[3] or 0),
            }
            # SUM over only NULLs is NULL on both dialects: no known cost is not a cost of 0.
            out["cost"] = None if sums[4] is None else float(sums[4])
            for key, column in (("by_tenant", c.tenant_id), ("by_key", c.key_id)):
                usage = apply_filters(
                    filters,
                    select(column, func.count(), func.sum(c.total_tokens), func.sum(c.cost)),
                    self.db.dialect,
                ).group_by(column)
                out[key] = {
                    str(value) if value is not None else "(none)": {
                        "requests": int(n),
                        "tokens": int(tokens or 0),
                        "cost": None if cost is None else float(cost),
                    }
                    for value, n, tokens, cost in await conn.execute(usage)
                }
            out["latency_ms"] = await self._percentiles(conn, filters, percentiles)
        return out

    async def _percentiles(
        self, conn: Any, filters: ReplayFilters, percentiles: Sequence[float]
    ) -> dict[str, float | None]:
        c = router_replay.c
        names = [f"p{round(p * 100):g}" for p in percentiles]
        timed = apply_filters(
            filters, select(c.total_ms).select_from(router_replay), self.db.dialect
        ).where(c.total_ms.is_not(None))
        if self.db.dialect.postgres:
            ordered = [func.percentile_cont(p).within_group(c.total_ms.asc()) for p in percentiles]
            query = apply_filters(
                filters, select(*ordered).select_from(router_replay), self.db.dialect
            ).where(c.total_ms.is_not(None))
            row = (await conn.execute(query)).one()
            return {
                n: (None if v is None else round(float(v), 3))
                for n, v in zip(names, row, strict=True)
            }
        n = (await conn.execute(select(func.count()).select_from(timed.subquery()))).scalar_one()
        result: dict[str, float | None] = {}
        for name, p in zip(names, percentiles, strict=True):
            if n == 0:
                result[name] = None
                continue
            position = p * (n - 1)
            low = int(position)
            values = [
                r[0] for r in await conn.execute(timed.order_by(c.total_ms).offset(low).limit(2))
            ]
            high = values[1] if len(values) > 1 else values[0]
            result[name] = round(values[0] + (high - values[0]) * (position - low), 3)
        return result

    async def replicas_with_records_in_flight(self) -> list[str]:
        """Replica ids that have ``in_progress`` records (reads only the partial index)."""
        async with self.db.read() as conn:
            rows = await conn.execute(
                select(router_replay.c.replica_id)
                .where(router_replay.c.lifecycle_state == LifecycleState.IN_PROGRESS.value)
                .distinct()
            )
            return [r[0] for r in rows]

    async def count_in_flight(self, replica_ids: Iterable[str]) -> int:
        ids = list(replica_ids)
        if not ids:
            return 0
        async with self.db.read() as conn:
            rows = await conn.execute(
                select(router_replay.c.id)
                .where(router_replay.c.lifecycle_state == LifecycleState.IN_PROGRESS.value)
                .where(router_replay.c.replica_id.in_(ids))
            )
            return len(rows.all())

    async def abort_in_flight(
        self, replica_ids: Iterable[str], *, at: datetime | None = None
    ) -> int:
        """Records the given (dead) replicas left ``in_progress`` become ``aborted`` /
        ``process_restart`` (a move of the replay lifecycle). Idempotent: returns how many
        changed."""
        assert REPLAY_LIFECYCLE.allows(LifecycleState.IN_PROGRESS, LifecycleState.ABORTED)
        ids = list(replica_ids)
        if not ids:
            return 0
        async with self.db.write() as conn:
            result = await conn.execute(
                update(router_replay)
                .where(router_replay.c.lifecycle_state == LifecycleState.IN_PROGRESS.value)
                .where(router_replay.c.replica_id.in_(ids))
                .values(
                    lifecycle_state=LifecycleState.ABORTED.value,
                    terminal_reason=TerminalReason.PROCESS_RESTART.value,
                    completed_at=at or utcnow(),
                )
            )
        return int(result.rowcount)


def summary_query(filters: ReplayFilters, dialect: Dialect) -> Any:
    """The list query before paging: every column but the bodies, filtered."""
    summary = [c for c in router_replay.c if c.name not in BODY_COLUMNS]
    return apply_filters(filters, select(*summary), dialect)


def apply_filters(filters: ReplayFilters, query: Any, dialect: Dialect) -> Any:
    """``query`` with the filters' WHERE clauses (each one backed by an index)."""
    c = router_replay.c
    if filters.tenant_id is not None:
        query = query.where(c.tenant_id == filters.tenant_id)
    if filters.decision is not None:
        query = query.where(c.decision == filters.decision)
    if filters.model is not None:
        query = query.where(c.selected_model == filters.model)
    if filters.lifecycle_state is not None:
        query = query.where(c.lifecycle_state == filters.lifecycle_state.value)
    if filters.session_id is not None:
        query = query.where(c.session_id == filters.session_id)
    if filters.since is not None:
        query = query.where(c.started_at >= filters.since)
    if filters.until is not None:
        query = query.where(c.started_at < filters.until)
    if filters.q is not None:
        query = query.where(_full_text_match(filters.q, dialect))
    return query


def _full_text_match(q: str, dialect: Dialect) -> Any:
    """Records whose captured prompt contains every word of ``q`` (words, not a query
    language: quotes and operators in ``q`` are taken literally)."""
    words = re.findall(r"\w+", q)
    if not words:
        raise InvalidRequest(
            "q must contain at least one word",
            details={"problems": [{"param": "q", "message": "no word in it"}]},
        )
    if dialect.postgres:
        # Matches the expression of ix_router_replay_prompt_fts, so the GIN index serves it.
        vector = func.to_tsvector(
            literal_column("'simple'"), func.coalesce(router_replay.c.prompt_text, "")
        )
        return vector.op("@@")(func.plainto_tsquery(literal_column("'simple'"), " ".join(words)))
    phrase = " ".join('"' + w + '"' for w in words)  # \w+ words: nothing to escape
    return literal_column("router_replay.rowid").in_(
        select(literal_column("rowid"))
        .select_from(text("router_replay_fts"))
        .where(text("router_replay_fts MATCH :fts_query").bindparams(fts_query=phrase))
    )
