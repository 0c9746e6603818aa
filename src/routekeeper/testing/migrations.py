"""Migration test helpers: upgrade to any revision, fill every table with generated rows, and
read back which rows a database holds.

Tables are reflected from the database (never taken from the declared schema), so the rows fit
the schema as it stands at whatever revision the database is at. Values come from each
column's reflected type (see ``testing.rows``).
"""

from __future__ import annotations

from typing import Any

from alembic import command
from sqlalchemy import Connection, MetaData, select

from routekeeper.storage.database import Database
from routekeeper.storage.dialect import dialect_named
from routekeeper.storage.migrate import alembic_config, script_directory
from routekeeper.testing.rows import generated_row

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
    sqlite = not dialect_named(conn.dialect.name).postgres
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
    if not dialect_named(conn.dialect.name).postgres:
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
        values = [generated_row(table, i, inserted) for i in range(rows)]
        conn.execute(table.insert(), values)
        inserted[table.name] = [dict(row._mapping) for row in conn.execute(select(table))]


def _row_keys(conn: Connection) -> Keys:
    keys: Keys = {}
    for table in reflect(conn).sorted_tables:
        columns = list(table.primary_key.columns)
        result = conn.execute(select(*columns) if columns else select(table))
        keys[table.name] = sorted(tuple(row)[: len(columns)] for row in result)
    return keys
