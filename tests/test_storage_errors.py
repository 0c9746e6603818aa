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
