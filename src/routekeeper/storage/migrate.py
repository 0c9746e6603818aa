"""Schema migrations: inspect, upgrade under a lock, and compare with the declared schema.

The lock: on PostgreSQL a transaction-scoped advisory lock; on SQLite the ``BEGIN IMMEDIATE``
transaction the whole upgrade runs in. Either way every revision and the version stamp commit
together, so replicas starting at once are safe and a failed upgrade leaves the old schema.
Alembic runs on the connection we hand it (through ``run_sync``), never through its own
``asyncio.run``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

from routekeeper.contract.errors import SchemaNotReady, SchemaTooNew, StorageError
from routekeeper.storage.database import Database
from routekeeper.storage.schema import unmanaged_prefixes
from routekeeper.storage.stores import declared_metadata

# The pg_advisory_xact_lock key reserved for routekeeper's migrations (any fixed int64 works;
# advisory locks are per database).
MIGRATION_LOCK_KEY = 0x3A1F_5C2B_9D4E_0617


class SchemaStatus(enum.StrEnum):
    EMPTY = "empty"
    BEHIND = "behind"
    CURRENT = "current"
    AHEAD = "ahead"


@dataclass(frozen=True)
class MigrationState:
    backend: str
    current: str | None
    head: str
    status: SchemaStatus
    pending: list[str] = field(default_factory=list)
    applied: list[str] = field(default_factory=list)


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(files("routekeeper.storage") / "migrations"))
    return cfg


def script_directory() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    head = script_directory().get_current_head()
    assert head is not None, "the package ships no migrations"
    return head


def _state(backend: str, current: str | None, applied: list[str] | None = None) -> MigrationState:
    script = script_directory()
    head = head_revision()
    if current is None:
        pending = [rev.revision for rev in reversed(list(script.walk_revisions("base", "head")))]
        return MigrationState(backend, None, head, SchemaStatus.EMPTY, pending, applied or [])
    if not _known(script, current):
        return MigrationState(backend, current, head, SchemaStatus.AHEAD, [], applied or [])
    pending = [rev.revision for rev in reversed(list(script.walk_revisions(current, "head")))]
    pending = [rev for rev in pending if rev != current]
    status = SchemaStatus.CURRENT if not pending else SchemaStatus.BEHIND
    return MigrationState(backend, current, head, status, pending, applied or [])


def _known(script: ScriptDirectory, revision: str) -> bool:
    try:
        return script.get_revision(revision) is not None
    except Exception:
        return False


def _current_revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def _too_new(state: MigrationState, db: Database) -> SchemaTooNew:
    return SchemaTooNew(
        f"backend {db.name!r} ({db.describe()}) is at schema revision {state.current!r}, "
        f"which this routekeeper does not know (its newest is {state.head!r}): the database was "
        "migrated by a newer version. Run that version, or restore a backup made before it.",
        details={"backend": db.name, "current": state.current, "head": state.head},
    )


async def inspect(db: Database) -> MigrationState:
    """Where the backend's schema stands, without changing anything."""
    async with db.read() as conn:
        current = await conn.run_sync(_current_revision)
    return _state(db.name, current)


async def upgrade(db: Database) -> MigrationState:
    """Upgrade to head under the migration lock. Raises SchemaTooNew for a newer database."""
    async with db.raw_connection() as conn:
        if db.dialect.postgres:
            current, applied = await conn.run_sync(_upgrade_postgres, db.name)
        else:
            current, applied = await conn.run_sync(_upgrade_sqlite, db.name)
    state = _state(db.name, current, applied)
    if state.status is SchemaStatus.AHEAD:
        raise _too_new(state, db)
    return state


async def ensure_schema(db: Database, *, auto_migrate: bool) -> MigrationState:
    """What ``serve`` does at start: migrate (when allowed) or refuse an unusable schema."""
    state = await inspect(db)
    if state.status is SchemaStatus.AHEAD:
        raise _too_new(state, db)
    if state.status is SchemaStatus.CURRENT:
        return state
    if not auto_migrate:
        raise SchemaNotReady(
            f"backend {db.name!r} ({db.describe()}) is at schema revision "
            f"{state.current or 'none (empty)'} but this routekeeper needs {state.head}; "
            "state.auto_migrate is false, so run `routekeeper db upgrade` first.",
            details={"backend": db.name, "current": state.current, "head": state.head},
        )
    return await upgrade(db)


def _run_alembic_upgrade(conn: Connection, name: str) -> tuple[str | None, list[str]]:
    before = _current_revision(conn)
    state = _state(name, before)
    if state.status is SchemaStatus.AHEAD or not state.pending:
        return before, []
    cfg = alembic_config()
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, "head")
    return _current_revision(conn), state.pending


def _upgrade_postgres(conn: Connection, name: str) -> tuple[str | None, list[str]]:
    with conn.begin():
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")
        return _run_alembic_upgrade(conn, name)


def _upgrade_sqlite(conn: Connection, name: str) -> tuple[str | None, list[str]]:
    # foreign_keys must be switched outside a transaction: with it ON, the table rebuilds of
    # batch migrations would cascade deletes through DROP TABLE.
    raw: Any = conn.connection.dbapi_connection
    _raw_exec(raw, "PRAGMA foreign_keys=OFF")
    try:
        with conn.begin():  # BEGIN IMMEDIATE: the migration lock
            result = _run_alembic_upgrade(conn, name)
            broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise StorageError(
                    f"migration left {len(broken)} foreign-key violations, rolled back: "
                    f"{broken[:5]}"
                )
            return result
    finally:
        _raw_exec(raw, "PRAGMA foreign_keys=ON")


def _raw_exec(raw: Any, sql: str) -> None:
    cursor = raw.cursor()
    try:
        cursor.execute(sql)
    finally:
        cursor.close()


def _managed(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    return not (name and name.startswith(unmanaged_prefixes()))


def _schema_differences(conn: Connection) -> list[Any]:
    context = MigrationContext.configure(
        conn, opts={"compare_type": True, "include_object": _managed}
    )
    return list(compare_metadata(context, declared_metadata()))


async def schema_differences(db: Database) -> list[str]:
    """Differences between the migrated database and the declared schema (empty = equal)."""
    async with db.read() as conn:
        diffs = await conn.run_sync(_schema_differences)
    return [repr(diff) for diff in diffs]
