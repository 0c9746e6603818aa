"""The ``evaluation_results`` surface: the outcome of each item of an evaluation job.

An evaluation writes its results inside the job's fenced transaction (lease owner and attempt
checked first) with :func:`upsert_results`, a plain function on the synchronous connection:
one row per (job, item), so an attempt that resumes before the item's checkpoint replaces what
the attempt before it wrote instead of adding a second row. Results belong to their job
(ON DELETE CASCADE): pruning a finished job prunes them. Nothing is kept in flight, so there
is no recovery step of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from routekeeper.contract.errors import NotFound
from routekeeper.contract.evaluation import EvaluationResultFilters, EvaluationResultRecord
from routekeeper.contract.pages import Page, SortOrder
from routekeeper.storage.dialect import dialect_named
from routekeeper.storage.records import from_row, to_row
from routekeeper.storage.schema.evaluation import evaluation_results
from routekeeper.storage.schema.jobs import jobs
from routekeeper.storage.surface_store import SurfaceStore

READ_BATCH = 5000


def _result(row: Any) -> EvaluationResultRecord:
    return from_row(EvaluationResultRecord, row)


def upsert_results(conn: Connection, results: Sequence[EvaluationResultRecord]) -> None:
    """Inside a write transaction (a job's fenced one): insert each result, or replace the
    one its (job, item) already has."""
    if not results:
        return
    statement = dialect_named(conn.dialect.name).upsert(evaluation_results)
    conn.execute(statement, [to_row(r) for r in results])


def count_results(conn: Connection, job_id: str) -> int:
    """How many items of the job have a result (inside any transaction)."""
    query = select(func.count()).select_from(evaluation_results)
    return int(conn.execute(query.where(evaluation_results.c.job_id == job_id)).scalar_one())


class EvaluationStore(SurfaceStore):
    tables = {"evaluation_results": (evaluation_results,)}
    records = {evaluation_results.name: EvaluationResultRecord}

    async def results(
        self, job_id: str, *, tenant_id: str, batch_size: int = READ_BATCH
    ) -> AsyncIterator[list[EvaluationResultRecord]]:
        """Every result of the job in item order, ``batch_size`` at a time (one read each,
        by the key)."""
        c = evaluation_results.c
        after = -1
        while True:
            query = (
                select(evaluation_results)
                .where(c.job_id == job_id)
                .where(c.tenant_id == tenant_id)
                .where(c.item_index > after)
                .order_by(c.item_index)
                .limit(batch_size)
            )
            async with self.db.read() as conn:
                batch = [_result(row) for row in await conn.execute(query)]
            if batch:
                yield batch
            if len(batch) < batch_size:
                return
            after = batch[-1].item_index

    async def count(self, job_id: str, *, tenant_id: str) -> int:
        c = evaluation_results.c
        query = (
            select(func.count())
            .select_from(evaluation_results)
            .where(c.job_id == job_id)
            .where(c.tenant_id == tenant_id)
        )
        async with self.db.read() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def list_results(
        self,
        job_id: str,
        filters: EvaluationResultFilters,
        *,
        tenant_id: str | None,
        limit: int,
        order: SortOrder,
        after: int | None = None,
        before: int | None = None,
    ) -> Page[EvaluationResultRecord]:
        """One keyset page of the job's results by item index (cursors are item indexes);
        NotFound when the tenant (None: any) has no such job."""
        c = evaluation_results.c
        job = select(jobs.c.id).where(jobs.c.id == job_id)
        if tenant_id is not None:
            job = job.where(jobs.c.tenant_id == tenant_id)
        async with self.db.read() as conn:
            found = await conn.execute(job)
            if found.one_or_none() is None:
                raise NotFound(f"no job {job_id}")
        query = select(evaluation_results).where(c.job_id == job_id)
        if filters.correct is not None:
            query = query.where(c.correct == filters.correct)
        return await self._page(
            query, c.item_index, _result, limit=limit, order=order, after=after, before=before
        )
