"""The plain SQLite inserts bind values with a short way for the common ones
(``storage.sqlite_binds``): for every column of every table, each value gives what Core's
processor gives, or the same refusal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import JSON, Boolean, Float
from sqlalchemy.dialects import postgresql, sqlite

from routekeeper.storage.sqlite_binds import sqlite_processor
from routekeeper.storage.stores import declared_metadata
from routekeeper.storage.types import BoundedInteger, ClientTextType, UTCDateTime

DIALECT = sqlite.dialect()
COLUMNS = [column for table in declared_metadata().sorted_tables for column in table.columns]


def _texts(max_length: int | None) -> list[Any]:
    values: list[Any] = ["", "a", "plain ascii", "nul\x00inside", "esc\x10ape", "é", "\ud800"]
    if max_length is not None:
        half = max_length // 2
        for n in {half - 1, half, half + 1, max_length, max_length + 1}:
            if n >= 1:
                values += ["x" * n, "\x00" * n, "é" * n, "x" * (n - 1) + "\x10"]
    else:
        values += ["x" * 100_000, "\x00" * 1000]
    return values


def _datetimes() -> list[Any]:
    now = datetime.now(UTC)
    return [
        now,
        now.replace(microsecond=0),
        datetime(5, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
        datetime.max.replace(tzinfo=UTC),
        datetime(2026, 1, 1, 12, tzinfo=timezone(timedelta(hours=2))),  # another zone
        datetime(2026, 1, 1, 12),  # naive: refused
    ]


SAMPLES: list[Any] = [
    None,
    0,
    1,
    -1,
    2**31 - 1,
    2**31,
    -(2**31),
    -(2**31) - 1,
    2**70,
    True,
    1.5,
    float("inf"),
    {},
    {"a": [1, "\x00", "é", None, 2.5]},
    [],
    [{"nested": {"x": "y"}}],
    "text",
    b"bytes",
    object(),
]


def _outcome(process: Any, value: Any) -> tuple[str, Any]:
    try:
        return ("value", value if process is None else process(value))
    except Exception as exc:  # the refusal itself is what is compared
        return ("refused", type(exc))


@pytest.mark.parametrize("column", COLUMNS, ids=[f"{c.table.name}.{c.name}" for c in COLUMNS])
def test_each_value_binds_as_core_binds_it(column):
    core = column.type.dialect_impl(DIALECT).bind_processor(DIALECT)
    fast = sqlite_processor(column, DIALECT)
    values = list(SAMPLES)
    if isinstance(column.type, ClientTextType):
        values += _texts(column.type.max_length)
    if isinstance(column.type, UTCDateTime):
        values += _datetimes()
    for value in values:
        assert _outcome(fast, value) == _outcome(core, value), (column, value)


def test_another_dialect_gets_cores_processors():
    """The short ways keep SQLite's stored form; on PostgreSQL client text is escaped and a
    datetime goes to the driver as a datetime."""
    pg = postgresql.dialect()
    c = declared_metadata().tables["responses"].c
    assert sqlite_processor(c["model"], pg)("a\x00b") == "a\x10\x01b"
    when = datetime.now(UTC)
    assert sqlite_processor(c["created_at"], pg)(when) == when
    assert sqlite_processor(c["model"], DIALECT)("a\x00b") == "a\x00b"


def test_the_short_ways_cover_the_types_of_the_hot_tables():
    """Every column of a stored response, its items and a replay record has a short way, no
    processor at all, or Core's cheap one (booleans, floats), so a new column type there is noticed
    (and given a short way, or not)."""
    kinds = (ClientTextType, UTCDateTime, JSON, BoundedInteger, Boolean, Float)
    hot = {"responses", "response_items", "router_replay"}
    for column in COLUMNS:
        if column.table.name in hot:
            core = column.type.dialect_impl(DIALECT).bind_processor(DIALECT)
            assert core is None or isinstance(column.type, kinds), column
