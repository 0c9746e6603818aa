"""Rows for any table, generated from its column types: what tests fill tables with when they
must not know which surface the table belongs to. Columns the stores' records read as enums
(see ``SurfaceStore.records``) take enum members."""

from __future__ import annotations

import enum
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import JSON, Column, Table

from routekeeper.storage.records import enum_fields
from routekeeper.storage.stores import STORES

FIRST_TIME = datetime(2026, 1, 1, tzinfo=UTC)


@cache
def enum_columns() -> dict[tuple[str, str], type[enum.Enum]]:
    """(table, column) -> the enum its record field holds, for every store's tables."""
    found: dict[tuple[str, str], type[enum.Enum]] = {}
    for store in STORES:
        for table, record in store.records.items():
            for name, enum_type in enum_fields(record).items():
                found[(table, name)] = enum_type
    return found


def generated_row(
    table: Table,
    i: int,
    inserted: dict[str, list[dict[str, Any]]] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Row ``i`` of ``table``: a value for every column but an autoincrement key, fitting its
    type and length; a foreign key takes a value of a row ``inserted`` holds for its table;
    columns that records read as enums take members in turn; ``overrides`` win."""
    row = {
        column.name: _value(table, column, i, inserted or {})
        for column in table.columns
        if column is not table.autoincrement_column
    }
    row.update(overrides)
    return row


def _value(
    table: Table, column: Column[Any], i: int, inserted: dict[str, list[dict[str, Any]]]
) -> Any:
    foreign_key = next(iter(column.foreign_keys), None)
    if foreign_key is not None:
        parents = inserted.get(foreign_key.column.table.name)
        return parents[i % len(parents)][foreign_key.column.name] if parents else None
    choices = enum_columns().get((table.name, column.name))
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
