"""The generic surface suite: what every registered surface must satisfy, on every backend kind
(sqlite, postgres, memory). Surface names come from the registry; a new surface is covered by
registering it."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import inspect as sa_inspect
from sqlalchemy import select

from routekeeper.contract import SURFACES
from routekeeper.contract.surface import WriteMode
from routekeeper.runtime.retention import retention_policy, setting_value
from routekeeper.server.app import create_app
from routekeeper.settings import load_settings
from routekeeper.storage.inventory import inventory_json, inventory_markdown
from routekeeper.storage.recovery import RecoveryContext, recovery_steps
from routekeeper.storage.state import StateStorage
from routekeeper.storage.stores import STORES
from routekeeper.storage.surface_store import RetentionPolicy, SurfaceStore
from routekeeper.storage.types import utcnow
from routekeeper.testing.rows import FIRST_TIME, generated_row

surface_names = pytest.mark.parametrize("surface", list(SURFACES))


def store_class(surface: str) -> type[SurfaceStore]:
    (holder,) = [store for store in STORES if surface in store.tables]
    return holder


@surface_names
def test_every_surface_is_held_by_exactly_one_store(surface):
    holders = [store for store in STORES if surface in store.tables]
    assert len(holders) == 1, f"{surface} is held by {holders}"
    store = holders[0]
    assert store.tables[surface], f"{surface} has no table"
    first = store.surfaces()[0]
    if surface != first:  # one store, one backend: the surfaces must commit together
        assert SURFACES[surface].colocated_with == first


def test_every_store_holds_registered_surfaces_only():
    held = [name for store in STORES for name in store.surfaces()]
    assert sorted(held) == sorted(SURFACES)


@surface_names
def test_the_declared_facts_agree_with_the_store(surface):
    declared, store = SURFACES[surface], store_class(surface)
    settings = load_settings(None)
    for table in store.tables[surface]:
        record = store.records[table.name]
        fields = set(record.__dataclass_fields__)
        assert fields == set(table.c.keys()), f"{table.name} columns vs {record.__name__}"
        if declared.tenant_scoped:
            assert "tenant_id" in table.c, f"{table.name} is tenant-scoped without tenant_id"
    if declared.id_prefix is not None:
        (key,) = store.tables[surface][0].primary_key.columns
        assert key.type.python_type is str
    assert (declared.retention is None) == (surface not in store.retention)
    if declared.retention is not None:
        assert store.retention[surface].table in store.tables[surface]
        for path in declared.retention.settings():
            assert isinstance(setting_value(settings, path), int), path
        policy = retention_policy(settings, surface)
        assert policy is not None and (policy.max_age or policy.max_count)
    assert (declared.lifecycle is None) == (surface not in store.lifecycle_columns)
    if declared.lifecycle is not None:
        column = store.lifecycle_columns[surface]
        assert column in store.tables[surface][0].c
        assert declared.lifecycle.terminal and declared.lifecycle.initial in declared.lifecycle.live
    if declared.writes.setting is not None:
        assert setting_value(settings, declared.writes.setting) in set(WriteMode)


@surface_names
def test_a_recovery_step_is_registered_exactly_when_declared(surface, tmp_path):
    storage = StateStorage(load_settings(None, workspace=tmp_path))
    registered = {step.surface for step in recovery_steps(storage)}
    assert (surface in registered) == SURFACES[surface].recovery_step, (
        f"{surface}: recovery_step={SURFACES[surface].recovery_step}, registered: {registered}"
    )


@surface_names
async def test_its_tables_exist_after_migration(surface, any_state_storage):
    store = any_state_storage.store_for(surface)
    async with store.db.read() as conn:
        names = await conn.run_sync(lambda sync: set(sa_inspect(sync).get_table_names()))
    for table in store.tables[surface]:
        assert table.name in names
    assert await store.count_rows(surface) == 0


async def fill(storage: StateStorage, rows: int = 4) -> None:
    """Rows in every table of every surface, old, each in its lifecycle's first state (the
    state a crash leaves records in); a foreign key takes a row of its parent table."""
    inserted: dict[str, list[dict[str, Any]]] = {}
    for store in storage.stores:
        for surface, tables in store.tables.items():
            overrides: dict[str, Any] = {}
            lifecycle = SURFACES[surface].lifecycle
            if lifecycle is not None:
                overrides[store.lifecycle_columns[surface]] = lifecycle.initial.value
            for table in tables:
                made = [generated_row(table, i, inserted, **overrides) for i in range(rows)]
                async with store.db.write() as conn:
                    await conn.execute(table.insert(), made)
                inserted[table.name] = made


async def snapshot(storage: StateStorage) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    for store in storage.stores:
        for tables in store.tables.values():
            for table in tables:
                async with store.db.read() as conn:
                    rows = (await conn.execute(select(table))).all()
                out[table.name] = sorted(tuple(map(repr, row)) for row in rows)
    return out


@surface_names
async def test_its_recovery_step_is_idempotent_and_its_dry_run_changes_nothing(
    surface, any_state_storage
):
    steps = [s for s in recovery_steps(any_state_storage) if s.surface == surface]
    if not steps:
        pytest.skip(f"{surface} has no registered recovery step (recovery_step=False)")
    ctx = RecoveryContext(
        any_state_storage, None, stale_after_seconds=10, healthy_for_seconds=float("inf")
    )
    await fill(any_state_storage)
    before = await snapshot(any_state_storage)
    for step in steps:
        dry = await step.run(ctx, True)
        assert dry.dry_run and sum(dry.counts.values()) > 0, f"nothing to fix: {dry}"
        assert await snapshot(any_state_storage) == before, "the dry run changed rows"
        fixed = await step.run(ctx, False)
        assert sum(fixed.counts.values()) > 0
        after = await snapshot(any_state_storage)
        assert after != before
        again = await step.run(ctx, False)
        assert await snapshot(any_state_storage) == after, "a second run changed rows"
        assert not again.crashed and not again.findings, again


@surface_names
async def test_retention_removes_old_rows_in_batches_and_keeps_the_rest(surface, any_state_storage):
    declared = SURFACES[surface]
    if declared.retention is None:
        pytest.skip(f"{surface} is kept until deleted")
    store = any_state_storage.store_for(surface)
    rule = store.retention[surface]
    eligible: dict[str, Any] = {rule.age_column: FIRST_TIME}
    kept_state: dict[str, Any] = {}
    if rule.state_column is not None:
        eligible[rule.state_column] = sorted(rule.states)[0]
        others = [s for s in declared.lifecycle.states if s.value not in rule.states]  # type: ignore[union-attr]
        kept_state = {rule.age_column: FIRST_TIME, rule.state_column: others[0].value}
    rows = [generated_row(rule.table, i, **eligible) for i in range(7)]
    rows += [generated_row(rule.table, 100 + i, **{rule.age_column: utcnow()}) for i in range(2)]
    if kept_state:
        rows.append(generated_row(rule.table, 200, **kept_state))
    async with store.db.write() as conn:
        await conn.execute(rule.table.insert(), rows)
    policy = RetentionPolicy(max_age=timedelta(days=1))
    batches = []
    while removed := await store.prune(surface, policy, batch_size=3):
        batches.append(removed)
    assert batches == [3, 3, 1]
    assert await store.db.count_rows(rule.table) == len(rows) - 7


@surface_names
def test_it_has_an_inventory_row(surface, tmp_path):
    settings = load_settings(None, workspace=tmp_path)
    rows = {row["name"]: row for row in inventory_json(settings)}
    assert rows[surface]["class"] == SURFACES[surface].state_class.value
    markdown = inventory_markdown(settings)
    assert markdown.count(f"| `{surface}` |") == 2  # the surfaces table and the facts table


@pytest.fixture
def status_rows(any_state_settings):
    with TestClient(create_app(any_state_settings)) as client:
        deadline = time.monotonic() + 20
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, client.get("/readyz").json()
            time.sleep(0.02)
        body = client.get("/api/status").json()
    return {row["name"]: row for row in body["surfaces"]}


@surface_names
def test_it_has_a_status_row_with_its_row_count(surface, status_rows):
    row = status_rows[surface]
    assert row["class"] == SURFACES[surface].state_class.value
    assert isinstance(row["rows"], int) and row["error"] is None
