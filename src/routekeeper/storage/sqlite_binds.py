"""Column values for the plain SQLite inserts (``sqlite_inserts.py``, ``replay_writes.py``):
each column's bind processor with a short way for the common value.

Core's processors are general: client text is checked for lone surrogates, escaped for
PostgreSQL and measured in its stored form, a datetime is converted to UTC, stripped of its
zone and formatted through a dict, JSON goes through a generic wrapper. On the writer thread
that was most of a stored response's Python time (a response and its items are some 30
values, its replay record 25 more), and each microsecond there is one the event loop waits for
the interpreter lock. The short ways below return exactly what Core's processor returns, for
the values they take:

- client text in ASCII that fits its column (SQLite keeps it as it is);
- a UTC datetime: formatted as SQLite's ``DATETIME`` stores it, when the column's format is
  the default one;
- a dict or a list in a JSON column: the dialect's serializer; None: what Core makes of it;
- a plain int in a ``BoundedInteger`` column, within its range.

Anything else (None, other types, long or non-ASCII text, other zones) goes to Core's
processor, which checks, converts or refuses it as before (``test_sqlite_binds.py`` holds both
to the same results)."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, Table
from sqlalchemy.engine import Dialect

from routekeeper.storage.dialect import SQLITE, dialect_named
from routekeeper.storage.types import (
    INT32_MAX,
    BoundedInteger,
    ClientTextType,
    UTCDateTime,
    encode_client_text,
)

Processor = Callable[[Any], Any]

DEFAULT_DATETIME_FORMAT = (
    "%(year)04d-%(month)02d-%(day)02d %(hour)02d:%(minute)02d:%(second)02d.%(microsecond)06d"
)


@functools.cache
def processors(dialect: Dialect, table: Table, columns: tuple[str, ...]) -> tuple[Any, ...]:
    """Each of ``columns``' processor (:func:`sqlite_processor`), built once per statement
    shape."""
    return tuple(sqlite_processor(table.c[name], dialect) for name in columns)


def sqlite_processor(column: Column[Any], dialect: Dialect) -> Processor | None:
    """``column``'s bind processor on SQLite (None when values go to the driver as they
    are), with the short way for its type when there is one; on another dialect, Core's."""
    type_ = column.type
    core = type_.dialect_impl(dialect).bind_processor(dialect)
    if core is None or dialect_named(dialect.name) is not SQLITE:
        return core
    if isinstance(type_, ClientTextType):
        return _client_text(core, type_.max_length)
    if isinstance(type_, UTCDateTime):
        stored = type_.impl.dialect_impl(dialect)
        if getattr(stored, "_storage_format", None) == DEFAULT_DATETIME_FORMAT:
            return _utc_datetime(core)
    if isinstance(type_, JSON):  # Core's serializer for the dialect
        return _json(core, getattr(dialect, "_json_serializer", None) or json.dumps)
    if isinstance(type_, BoundedInteger):
        return _bounded_integer(core)
    return core


def _client_text(core: Processor, max_length: int | None) -> Processor:
    def process(value: Any) -> Any:
        # ASCII text is stored as it is; the bound applies to its escaped form.
        if type(value) is str and value.isascii():
            if max_length is None or len(encode_client_text(value)) <= max_length:
                return value
        return core(value)

    return process


def _utc_datetime(core: Processor) -> Processor:
    def process(value: Any) -> Any:
        if type(value) is datetime and value.tzinfo is UTC:
            return (
                f"{value.year:04d}-{value.month:02d}-{value.day:02d} "
                f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}.{value.microsecond:06d}"
            )
        return core(value)

    return process


def _json(core: Processor, serializer: Callable[[Any], str]) -> Processor:
    none = core(None)  # JSON's null, or SQL NULL: as the column's type says

    def process(value: Any) -> Any:
        if type(value) is dict or type(value) is list:
            return serializer(value)
        if value is None:
            return none
        return core(value)

    return process


def _bounded_integer(core: Processor) -> Processor:
    def process(value: Any) -> Any:
        if type(value) is int and -INT32_MAX - 1 <= value <= INT32_MAX:
            return value
        return core(value)

    return process
