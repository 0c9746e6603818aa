"""The ``evaluation_results`` store on SQLite and PostgreSQL: one row per (job, item), upserted
(a resumed attempt replaces what the attempt before it wrote), keyset pages by item index with
the ``correct`` filter, tenant isolation, and results going with their job."""

from datetime import UTC, datetime

import pytest
from sqlalchemy import delete, select

from routekeeper.contract.errors import NotFound
from routekeeper.contract.evaluation import EvaluationResultFilters, EvaluationResultRecord
from routekeeper.contract.pages import SortOrder
from routekeeper.storage.evaluation_store import EvaluationStore, count_results, upsert_results
from routekeeper.storage.schema.jobs import jobs
from routekeeper.testing.rows import generated_row

AT = datetime(2026, 12, 7, tzinfo=UTC)


def result(job_id, index, *, attempt=1, correct=True, tenant_id="default"):
    return EvaluationResultRecord(
        job_id=job_id,
        item_index=index,
        attempt=attempt,
        valid=True,
        correct=correct,
        created_at=AT,
        expected_decision="math",
        decision="math" if correct else "chat",
        model="big",
        decision_correct=correct,
        routing_ms=0.5 + index,
        tenant_id=tenant_id,
    )


async def add_job(store, i, tenant_id="default"):
    row = generated_row(jobs, i, id=f"job_{i:026d}", tenant_id=tenant_id, status="running")
    async with store.db.write() as conn:
        await conn.execute(jobs.insert(), [row])
    return row["id"]


async def test_upserts_keep_one_row_per_item(state_storage):
    store = state_storage.store(EvaluationStore)
    job = await add_job(store, 1)
    async with store.db.write() as conn:
        await conn.run_sync(lambda c: upsert_results(c, [result(job, i) for i in range(10)]))
    # A resumed attempt writes items 5-9 again, with another verdict.
    again = [result(job, i, attempt=2, correct=False) for i in range(5, 10)]
    async with store.db.write() as conn:
        await conn.run_sync(lambda c: upsert_results(c, again))
        await conn.run_sync(lambda c: upsert_results(c, []))
        assert await conn.run_sync(lambda c: count_results(c, job)) == 10
    stored = [
        r async for batch in store.results(job, tenant_id="default", batch_size=3) for r in batch
    ]
    assert [r.item_index for r in stored] == list(range(10))
    assert stored[:5] == [result(job, i) for i in range(5)]
    assert stored[5:] == again
    assert await store.count(job, tenant_id="default") == 10


async def test_pages_by_item_with_the_correct_filter(state_storage):
    store = state_storage.store(EvaluationStore)
    job = await add_job(store, 1)
    other = await add_job(store, 2)
    async with store.db.write() as conn:
        await conn.run_sync(
            lambda c: upsert_results(
                c,
                [result(job, i, correct=i % 3 != 0) for i in range(25)]
                + [result(other, i) for i in range(4)],
            )
        )
    none = EvaluationResultFilters()

    async def page(**kwargs):
        kwargs.setdefault("order", SortOrder.ASC)
        kwargs.setdefault("filters", none)
        filters = kwargs.pop("filters")
        return await store.list_results(job, filters, tenant_id="default", **kwargs)

    first = await page(limit=10)
    assert [r.item_index for r in first.data] == list(range(10))
    assert (first.first_id, first.last_id, first.has_more) == (0, 9, True)
    rest = await page(limit=100, after=first.last_id)
    assert [r.item_index for r in rest.data] == list(range(10, 25)) and not rest.has_more
    newest = await page(limit=5, order=SortOrder.DESC)
    assert [r.item_index for r in newest.data] == [24, 23, 22, 21, 20]
    before = await page(limit=3, before=10)
    assert [r.item_index for r in before.data] == [7, 8, 9]
    failed = await page(limit=100, filters=EvaluationResultFilters(correct=False))
    assert [r.item_index for r in failed.data] == [0, 3, 6, 9, 12, 15, 18, 21, 24]


async def test_another_tenants_job_and_an_unknown_job_are_not_found(state_storage):
    store = state_storage.store(EvaluationStore)
    theirs = await add_job(store, 1, tenant_id="other")
    async with store.db.write() as conn:
        await conn.run_sync(lambda c: upsert_results(c, [result(theirs, 0, tenant_id="other")]))
    for job_id in (theirs, "job_" + "9" * 26):
        with pytest.raises(NotFound):
            await store.list_results(
                job_id,
                EvaluationResultFilters(),
                tenant_id="default",
                limit=5,
                order=SortOrder.ASC,
            )
    assert await store.count(theirs, tenant_id="default") == 0
    assert [b async for b in store.results(theirs, tenant_id="default")] == []


async def test_results_go_with_their_job(state_storage):
    store = state_storage.store(EvaluationStore)
    job, kept = await add_job(store, 1), await add_job(store, 2)
    async with store.db.write() as conn:
        await conn.run_sync(
            lambda c: upsert_results(c, [result(job, 0), result(job, 1), result(kept, 0)])
        )
        await conn.execute(delete(jobs).where(jobs.c.id == job))
    async with store.db.read() as conn:
        left = (await conn.execute(select(store.tables["evaluation_results"][0]))).all()
    assert [(r.job_id, r.item_index) for r in left] == [(kept, 0)]
