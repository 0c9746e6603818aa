"""What differs between the two SQL dialects, in one object: stores ask it, never compare
dialect names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, Table
from sqlalchemy.dialects import postgresql, sqlite

from routekeeper.contract import BackendKind


@dataclass(frozen=True)
class Dialect:
    name: str
    """SQLAlchemy's dialect name: ``sqlite`` or ``postgresql``."""

    @property
    def postgres(self) -> bool:
        return self is POSTGRESQL

    def insert(self, table: Table) -> Any:
        """An INSERT that supports ``on_conflict_do_update`` / ``do_nothing``."""
        return postgresql.insert(table) if self.postgres else sqlite.insert(table)

    def upsert(self, table: Table) -> Any:
        """INSERT, or on a primary-key conflict replace every other column (idempotent
        re-writes of a batch whose commit outcome was lost)."""
        statement = self.insert(table)
        keys = [c.name for c in table.primary_key.columns]
        return statement.on_conflict_do_update(
            index_elements=keys,
            set_={c.name: statement.excluded[c.name] for c in table.c if c.name not in keys},
        )

    def for_update(self, query: Select[Any]) -> Select[Any]:
        """Lock the selected rows until the transaction ends. SQLite needs nothing: a write
        transaction there is ``BEGIN IMMEDIATE``, so it holds the only write lock already."""
        return query.with_for_update() if self.postgres else query


SQLITE = Dialect("sqlite")
POSTGRESQL = Dialect("postgresql")


_BY_NAME = {d.name: d for d in (SQLITE, POSTGRESQL)}


def dialect_named(name: str) -> Dialect:
    """Ours for SQLAlchemy's dialect name (in type decorators and migrations)."""
    return _BY_NAME[name]


def dialect_of(kind: BackendKind) -> Dialect:
    """``memory`` is SQLite too (in memory, on one connection)."""
    return POSTGRESQL if kind is BackendKind.POSTGRES else SQLITE
