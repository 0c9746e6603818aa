"""A connection lost inside a write transaction is the database going away
(StorageUnavailable: writers keep their data and retry), never a refusal of the values."""

from urllib.parse import urlsplit

import pytest
from sqlalchemy import text

from routekeeper.contract.errors import StorageUnavailable
from routekeeper.testing import TcpProxy

pytestmark = pytest.mark.postgres


async def test_a_cut_in_the_middle_of_a_write_is_unavailable_and_the_next_write_works(
    postgres_dsn,
):
    from routekeeper.storage.config import PostgresBackend
    from routekeeper.storage.database import Database

    target = urlsplit(postgres_dsn)
    with TcpProxy(target.hostname, target.port or 5432) as proxy:
        db = Database("pg", PostgresBackend(dsn=proxy.dsn_for(postgres_dsn)))
        await db.open()
        try:
            with pytest.raises(StorageUnavailable, match="database unavailable"):
                async with db.write() as conn:
                    await conn.execute(text("SELECT 1"))
                    proxy.cut()
                    await conn.execute(text("SELECT 2"))
            proxy.restore()
            async with db.write() as conn:
                assert (await conn.execute(text("SELECT 3"))).scalar_one() == 3
        finally:
            await db.close()


async def test_a_query_cancelled_twice_ends_its_task_even_under_a_loop_that_retries_errors(
    postgres_dsn,
):
    """A shutdown cancels a background loop, then cancels it again when its budget runs out.
    The driver answers the second cancellation by closing the connection, and SQLAlchemy's
    clean-up then fails on it; had the storage layer translated that failure into a storage
    error, the loop (which retries storage errors, as the heartbeat does) would go on."""
    import asyncio

    from routekeeper.contract.errors import StorageError
    from routekeeper.storage.config import PostgresBackend
    from routekeeper.storage.database import Database

    db = Database("pg", PostgresBackend(dsn=postgres_dsn))
    await db.open()
    retried: list[str] = []
    started = asyncio.Event()
    halted = False  # lets the test end its loop if the cancellation was lost

    async def retrying_loop() -> None:
        while not halted:
            try:
                async with db.write() as conn:
                    started.set()
                    await conn.execute(text("SELECT pg_sleep(30)"))
            except StorageError as exc:
                retried.append(str(exc))
                await asyncio.sleep(0.05)

    try:
        for gap in (0.0, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1):
            started.clear()
            task = asyncio.create_task(retrying_loop())
            await started.wait()
            await asyncio.sleep(0.2)  # the query runs
            task.cancel()
            await asyncio.sleep(gap)
            task.cancel()  # the budget ran out: asked again
            done, _ = await asyncio.wait({task}, timeout=20)
            assert done == {task} and task.cancelled(), (gap, retried)
        assert retried == []
    finally:
        halted = True
        await asyncio.sleep(0.1)
        await db.close()
