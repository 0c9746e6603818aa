"""Migrations on both dialects: empty -> head equals the declared schema; the lock; refusals."""

import asyncio
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from routekeeper.contract.errors import SchemaNotReady, SchemaTooNew
from routekeeper.settings import load_settings
from routekeeper.storage.migrate import (
    SchemaStatus,
    ensure_schema,
    head_revision,
    inspect,
    schema_differences,
    upgrade,
)
from routekeeper.storage.state import StateStorage

ROOT = Path(__file__).resolve().parents[1]


async def test_empty_database_upgrades_to_head_and_matches_the_declared_schema(state_settings):
    storage = StateStorage(state_settings)
    await storage.open()
    try:
        db = storage.database_for("runtime_status")
        before = await inspect(db)
        assert before.status is SchemaStatus.EMPTY
        assert before.pending[-1] == head_revision()
        after = await upgrade(db)
        assert after.status is SchemaStatus.CURRENT
        assert after.applied == before.pending
        assert await schema_differences(db) == []
        # a second upgrade is a no-op
        again = await upgrade(db)
        assert again.applied == [] and again.current == head_revision()
    finally:
        await storage.close()


async def test_schema_differences_notices_a_drifted_database(state_storage):
    db = state_storage.database_for("runtime_status")
    async with db.write() as conn:
        await conn.execute(text("CREATE TABLE stray (id INTEGER PRIMARY KEY)"))
        await conn.execute(text("DROP INDEX ix_runtime_events_occurred_at"))
    diffs = await schema_differences(db)
    assert any("stray" in d for d in diffs)
    assert any("ix_runtime_events_occurred_at" in d for d in diffs)


async def test_a_database_newer_than_the_code_is_refused(state_storage):
    db = state_storage.database_for("runtime_status")
    async with db.write() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = '9999_from_the_future'"))
    state = await inspect(db)
    assert state.status is SchemaStatus.AHEAD
    with pytest.raises(SchemaTooNew, match="9999_from_the_future"):
        await ensure_schema(db, auto_migrate=True)
    with pytest.raises(SchemaTooNew, match="newer version"):
        await upgrade(db)


async def test_auto_migrate_false_refuses_an_empty_database(state_settings):
    storage = StateStorage(state_settings)
    await storage.open()
    try:
        db = storage.database_for("runtime_status")
        with pytest.raises(SchemaNotReady, match="routekeeper db upgrade"):
            await ensure_schema(db, auto_migrate=False)
        assert (await inspect(db)).status is SchemaStatus.EMPTY
    finally:
        await storage.close()


async def test_concurrent_upgrades_apply_each_revision_once(state_settings):
    """Several processes' worth of storages migrating one empty database at the same moment."""
    storages = [StateStorage(state_settings) for _ in range(4)]
    for storage in storages:
        await storage.open()
    try:
        results = await asyncio.gather(
            *(upgrade(s.database_for("runtime_status")) for s in storages)
        )
        applied = [r.applied for r in results if r.applied]
        assert len(applied) == 1, results
        assert all(r.current == head_revision() for r in results)
        assert await schema_differences(storages[0].database_for("runtime_status")) == []
    finally:
        for storage in storages:
            await storage.close()


def test_sqlite_workspace_is_in_wal_mode_after_upgrade(tmp_path):
    settings = load_settings(None, workspace=tmp_path)

    async def run():
        storage = StateStorage(settings)
        await storage.open()
        try:
            await storage.migrate()
        finally:
            await storage.close()

    asyncio.run(run())
    conn = sqlite3.connect(tmp_path / "state.db")
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert (
            conn.execute("SELECT version_num FROM alembic_version").fetchone()[0] == head_revision()
        )
    finally:
        conn.close()


@pytest.mark.slow
def test_db_upgrade_works_from_a_non_editable_install(tmp_path):
    """Build the wheel, install it (without deps) into a directory, and run `db upgrade` from
    it: the migrations must be found as package resources, not in the source tree."""
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            str(ROOT),
        ],
        check=True,
    )
    wheel = next(wheels.glob("routekeeper-*.whl"))
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
    )
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}
    where = subprocess.run(
        [sys.executable, "-c", "import routekeeper, sys; print(routekeeper.__file__)"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.strip().startswith(str(target))
    workspace = tmp_path / "ws"
    result = subprocess.run(
        [sys.executable, "-m", "routekeeper", "db", "upgrade", "--workspace", str(workspace)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    assert head_revision() in result.stdout
    check = subprocess.run(
        [sys.executable, "-m", "routekeeper", "db", "check", "--workspace", str(workspace)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr + check.stdout
