"""Migration test helpers: upgrade to any revision, fill every table with generated rows, and
read back which rows a database holds.

Tables are reflected from the database (never taken from the declared schema), so the rows fit
the schema as it stands at whatever revision the database is at. Values come from each
column's reflected type; columns whose values the code reads as enums get enum values.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime, timedelta
from typing import Any

from alembic import command
from sqlalchemy import JSON, Column, Connection, MetaData, Table, select

from routekeeper.contract.replay import LifecycleState, TerminalReason
from routekeeper.contract.runtime import ReplicaPhase, RuntimeEventKind
from routekeeper.storage.database import Database
from routekeeper.storage.migrate import alembic_config, script_directory

ENUM_COLUMNS: dict[tuple[str, str], type[enum.StrEnum]] = {
    ("runtime_replicas", "phase"): ReplicaPhase,
    ("runtime_events", "kind"): RuntimeEventKind,
    ("runtime_events", "from_phase"): ReplicaPhase,
    ("runtime_events", "to_phase"): ReplicaPhase,
    ("router_replay", "lifecycle_state"): LifecycleState,
    ("router_replay", "terminal_reason"): TerminalReason,
}

FIRST_TIME = datetime(2026, 1, 1, tzinfo=UTC)

Keys = dict[str, list[tuple[Any, ...]]]
"""Per table, the primary key of every row (an empty tuple per row for a table without one)."""


def revision_chain() -> list[str]:
    """Every revision the package ships, oldest first."""
    return [rev.revision for rev in reversed(list(script_directory().walk_revisions()))]


def upgrade_starts() -> list[str]:
    """Every revision a database can be upgraded from: all but the head."""
    return revision_chain()[:-1]


async def upgrade_to(db: Database, revision: str) -> None:
    """Upgrade ``db`` to ``revision`` in one transaction, as ``migrate.upgrade`` does to head
    (on SQLite with foreign keys off while it runs)."""
    async with db.raw_connection() as conn:
        await conn.run_sync(_upgrade_to, revision)


def _upgrade_to(conn: Connection, revision: str) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = conn
    sqlite = conn.dialect.name == "sqlite"
    if sqlite:
        _pragma(conn, "foreign_keys=OFF")
    try:
        with conn.begin():
            command.upgrade(cfg, revision)
    finally:
        if sqlite:
            _pragma(conn, "foreign_keys=ON")


def _pragma(conn: Connection, setting: str) -> None:
    raw: Any = conn.connection.dbapi_connection
    cursor = raw.cursor()
    try:
        cursor.execute(f"PRAGMA {setting}")
    finally:
        cursor.close()


async def fill_every_table(db: Database, rows: int = 3) -> Keys:
    """Insert ``rows`` rows into every table and return the keys of what the tables hold."""
    async with db.write() as conn:
        await conn.run_sync(_fill, rows)
    return await row_keys(db)


async def row_keys(db: Database) -> Keys:
    """The primary keys of every row of every table, sorted per table."""
    async with db.read() as conn:
        return await conn.run_sync(_row_keys)


def reflect(conn: Connection) -> MetaData:
    """The database's own tables: not the version table, and on SQLite not virtual tables
    (full-text search) or their shadow tables."""
    virtual: tuple[str, ...] = ()
    if conn.dialect.name == "sqlite":
        found = conn.exec_driver_sql(
            "SELECT name FROM sqlite_master WHERE type = 'table' "
            "AND sql LIKE 'CREATE VIRTUAL TABLE%'"
        )
        virtual = tuple(name for (name,) in found)

    def keep(name: str, _: MetaData) -> bool:
        if name == "alembic_version" or name in virtual:
            return False
        return not name.startswith(tuple(f"{v}_" for v in virtual))

    metadata = MetaData()
    metadata.reflect(conn, only=keep)
    return metadata


def _fill(conn: Connection, rows: int) -> None:
    inserted: dict[str, list[dict[str, Any]]] = {}
    for table in reflect(conn).sorted_tables:
        values = [_row(table, i, inserted) for i in range(rows)]
        conn.execute(table.insert(), values)
        inserted[table.name] = [dict(row._mapping) for row in conn.execute(select(table))]


def _row_keys(conn: Connection) -> Keys:
    keys: Keys = {}
    for table in reflect(conn).sorted_tables:
        columns = list(table.primary_key.columns)
        result = conn.execute(select(*columns) if columns else select(table))
        keys[table.name] = sorted(tuple(row)[: len(columns)] for row in result)
    return keys


def _row(table: Table, i: int, inserted: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    return {
        column.name: _value(table, column, i, inserted)
        for column in table.columns
        if column is not table.autoincrement_column
    }


def _value(
    table: Table, column: Column[Any], i: int, inserted: dict[str, list[dict[str, Any]]]
) -> Any:
    foreign_key = next(iter(column.foreign_keys), None)
    if foreign_key is not None:
        parents = inserted.get(foreign_key.column.table.name)
        return parents[i % len(parents)][foreign_key.column.name] if parents else None
    choices = ENUM_COLUMNS.get((table.name, column.name))
    if choices is not None:
        members = list(choices)
        return members[i % len(members)].value
    if isinstance(column.type, JSON):
        return {}
    try:
        kind = column.type.python_type
    except NotImplementedError:
        kind = type(None)
    if kind is bool:
        return i % 2 == 0
    if kind is int:
        return i + 1
    if kind is float:
        return i + 0.5
    if kind is str:
        return _text(column.name, i, getattr(column.type, "length", None))
    if kind is datetime:
        moment = FIRST_TIME + timedelta(minutes=i)
        return moment if getattr(column.type, "timezone", False) else moment.replace(tzinfo=None)
    if column.nullable:
        return None
    raise TypeError(f"no generated value for {table.name}.{column.name} ({column.type!r})")


def _text(name: str, i: int, length: int | None) -> str:
    suffix = f"-{i}"
    if length is None:
        return f"{name}{suffix}"
    return name[: max(0, length - len(suffix))] + suffix
