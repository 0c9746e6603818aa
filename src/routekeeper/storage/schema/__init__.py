"""The declared schema, one for both dialects, on one ``MetaData``: each surface's tables
live in a module of this package (``schema/<surface family>.py``). Migrations in
``migrations/versions`` must produce exactly this (a test compares them on SQLite and
PostgreSQL); ``storage.stores`` imports every module, so ``declared_metadata()`` there is
the whole schema."""

from __future__ import annotations

from sqlalchemy import BigInteger, Integer, MetaData

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

# SQLite only auto-assigns INTEGER PRIMARY KEY (the rowid alias), not BIGINT.
BigIntId = BigInteger().with_variant(Integer(), "sqlite")


def unmanaged(*prefixes: str) -> None:
    """Declare database objects that migrations create by hand (dialect-specific, e.g. a
    full-text index) by name prefix: the schema comparison leaves them out."""
    metadata.info.setdefault("unmanaged", set()).update(prefixes)


def unmanaged_prefixes() -> tuple[str, ...]:
    return tuple(sorted(metadata.info.get("unmanaged", ())))
