"""Upgrading a database that holds rows, on both dialects: from every revision before head,
with generated rows in every table, the upgrade to head keeps every row (same primary keys in
every table that still exists) and ends at exactly the declared schema. A new revision adds a
case by itself."""

import pytest

from routekeeper.storage.migrate import head_revision, inspect, schema_differences, upgrade
from routekeeper.storage.state import StateStorage
from routekeeper.testing.migrations import fill_every_table, row_keys, upgrade_starts, upgrade_to

ROWS = 3


@pytest.fixture
async def empty_storage(state_settings):
    storage = StateStorage(state_settings)
    await storage.open()
    try:
        yield storage
    finally:
        await storage.close()


@pytest.mark.parametrize("start", upgrade_starts(), ids=lambda rev: f"from_{rev}")
async def test_upgrade_to_head_keeps_every_row(empty_storage, start):
    db = empty_storage.database_for("runtime_status")
    await upgrade_to(db, start)
    assert (await inspect(db)).current == start

    before = await fill_every_table(db, ROWS)
    assert before, f"no table at {start}"
    assert {table: len(keys) for table, keys in before.items()} == dict.fromkeys(before, ROWS)

    state = await upgrade(db)
    assert state.current == head_revision()

    after = await row_keys(db)
    for table, keys in before.items():
        if table in after:
            assert after[table] == keys, f"the upgrade from {start} changed the rows of {table}"
    assert await schema_differences(db) == []
