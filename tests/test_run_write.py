"""``Database.run_write`` on every backend: a write function is one transaction, committed
before the call returns; calls made at the same time share a transaction on SQLite (group
commit) and still fail alone: one that raises, or that the database refuses, leaves no row and
takes no other write with it; after-commit callbacks run for committed writes only."""

import asyncio

import pytest
from sqlalchemy import event, insert, select

from routekeeper.contract.errors import StorageError
from routekeeper.contract.ids import new_id
from routekeeper.contract.responses import ResponseRecord, ResponseStatus
from routekeeper.storage.database import after_commit
from routekeeper.storage.records import to_row
from routekeeper.storage.schema.responses import responses
from routekeeper.storage.types import utcnow


def _row(response_id: str) -> dict:
    record = ResponseRecord(
        id=response_id,
        replica_id="rep_test",
        status=ResponseStatus.IN_PROGRESS,
        model="m",
        created_at=utcnow(),
        request={"metadata": {}},
    )
    return to_row(record)


async def test_concurrent_writes_commit_together_and_fail_alone(any_state_storage):
    db = any_state_storage.database_for("responses")
    kept = [new_id("resp") for _ in range(6)]
    raised, refused = new_id("resp"), kept[0]
    told: list[str] = []
    begins: list[object] = []

    def insert_one(response_id: str, fail: bool = False):
        def write(conn):
            conn.execute(insert(responses), _row(response_id))
            after_commit(conn, lambda: told.append(response_id))
            if fail:
                raise ValueError("the caller's own failure, after it wrote")
            return response_id

        return write

    def began(conn):
        begins.append(conn)

    engines = db.engines()
    for engine in engines:
        event.listen(engine, "begin", began)
    try:
        results = await asyncio.gather(
            *(db.run_write(insert_one(i)) for i in kept[:3]),
            db.run_write(insert_one(raised, fail=True)),
            db.run_write(insert_one(refused)),  # the same id again: refused by the database
            *(db.run_write(insert_one(i)) for i in kept[3:]),
            return_exceptions=True,
        )
    finally:
        for engine in engines:
            event.remove(engine, "begin", began)
    assert results[:3] + results[5:] == kept
    assert isinstance(results[3], ValueError)
    assert isinstance(results[4], StorageError)
    async with db.read() as conn:
        stored = {r[0] for r in await conn.execute(select(responses.c.id))}
    assert stored == set(kept)
    assert sorted(told) == sorted(kept)
    if db.kind.value == "sqlite":  # group commit: fewer transactions than writes
        assert len(begins) < len(results), begins


async def test_a_write_alone_raises_its_error_and_writes_nothing(any_state_storage):
    db = any_state_storage.database_for("responses")
    response_id = new_id("resp")

    def write(conn):
        conn.execute(insert(responses), _row(response_id))
        raise ValueError("no")

    with pytest.raises(ValueError):
        await db.run_write(write)
    assert await db.count_rows(responses) == 0
    assert await db.run_write(lambda conn: conn.execute(insert(responses), _row(response_id)))
    assert await db.count_rows(responses) == 1


@pytest.mark.parametrize("backend_kind", ["sqlite"], indirect=True)
async def test_a_sqlite_group_runs_without_savepoints_until_one_write_raises(state_storage):
    """Writes of one group commit run one after the other in the shared transaction; only
    when one raises is it rolled back and the group run again, each write in a savepoint
    (so a write function may run twice: its effects on the database count once)."""
    db = state_storage.database_for("responses")
    statements: list[str] = []
    runs: dict[str, int] = {}

    def executed(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement.split()[0].upper())

    def insert_one(response_id: str, fail: bool = False):
        def write(conn):
            runs[response_id] = runs.get(response_id, 0) + 1
            conn.execute(insert(responses), _row(response_id))
            if fail:
                raise ValueError("refused by its caller")
            return response_id

        return write

    engines = db.engines()
    for engine in engines:
        event.listen(engine, "before_cursor_execute", executed)
    try:
        healthy = [new_id("resp") for _ in range(4)]
        assert await asyncio.gather(*(db.run_write(insert_one(i)) for i in healthy)) == healthy
        together = list(statements)
        statements.clear()
        second = [new_id("resp") for _ in range(3)]
        failing = new_id("resp")
        results = await asyncio.gather(
            db.run_write(insert_one(second[0])),
            db.run_write(insert_one(failing, fail=True)),
            *(db.run_write(insert_one(i)) for i in second[1:]),
            return_exceptions=True,
        )
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", executed)
    assert together.count("INSERT") == 4 and "SAVEPOINT" not in together, together
    assert all(runs[i] == 1 for i in healthy)
    assert results[0] == second[0] and results[2:] == second[1:]
    assert isinstance(results[1], ValueError)
    assert statements.count("SAVEPOINT") == 4, statements  # the second run, one per write
    # The write before the failing one ran in both transactions, those after it in the second.
    assert runs[second[0]] == 2 and runs[failing] == 2
    assert all(runs[i] == 1 for i in second[1:])
    async with db.read() as conn:
        stored = {r[0] for r in await conn.execute(select(responses.c.id))}
    assert stored == {*healthy, *second}
