"""Column types that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Dialect, Integer, String, Text
from sqlalchemy.types import TypeDecorator

from routekeeper.contract.errors import InvalidValue
from routekeeper.storage.dialect import dialect_named


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both dialects.

    PostgreSQL stores ``timestamptz``; SQLite has no time zones, so values are stored as naive
    UTC and come back with ``tzinfo=UTC`` attached. Naive input is refused: a time without a
    zone is a bug, not a guess to make."""

    impl = DateTime(timezone=True)
    cache_ok = True

    @property
    def python_type(self) -> type[datetime]:
        return datetime

    def process_bind_param(self, value: object, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise ValueError(f"expected a timezone-aware datetime, got {value!r}")
        value = value.astimezone(UTC)
        return value if dialect_named(dialect.name).postgres else value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


# -- client values --------------------------------------------------------------------------
#
# Any text a client (or an upstream) can send must be storable. PostgreSQL text cannot hold
# U+0000, so on PostgreSQL client text is stored escaped: ESCAPE doubles itself and U+0000
# becomes ESCAPE + NUL_MARK. Both are control characters PostgreSQL accepts and its text
# search parser treats as separators, and text without either is stored unchanged (indexes,
# equality filters and search keep working on ordinary values). SQLite holds U+0000 as is.

ESCAPE = "\x10"
NUL_MARK = "\x01"


def encode_client_text(value: str) -> str:
    """The form of ``value`` PostgreSQL can hold (the identity when there is nothing to
    escape)."""
    if ESCAPE in value:
        value = value.replace(ESCAPE, ESCAPE + ESCAPE)
    if "\x00" in value:
        value = value.replace("\x00", ESCAPE + NUL_MARK)
    return value


def decode_client_text(value: str) -> str:
    """Inverse of :func:`encode_client_text`."""
    if ESCAPE not in value:
        return value
    out: list[str] = []
    i, n = 0, len(value)
    while i < n:
        ch = value[i]
        if ch == ESCAPE and i + 1 < n and value[i + 1] in (ESCAPE, NUL_MARK):
            out.append(ESCAPE if value[i + 1] == ESCAPE else "\x00")
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


class ClientTextType(TypeDecorator[str]):
    """Text that may hold any Unicode scalar value, U+0000 included, optionally bounded.

    Every text column of a surface table is a :class:`ClientText` or :class:`ClientString`
    (a test checks it), so a new surface cannot forget the encoding. A bound is checked on
    every dialect alike (SQLite does not enforce declared lengths; PostgreSQL would refuse the
    whole transaction), on the stored form: U+0000 and the escape character count twice."""

    cache_ok = True
    max_length: int | None = None

    @property
    def python_type(self) -> type[str]:
        return str

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise InvalidValue(f"expected text, got {type(value).__name__}")
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidValue(
                    "text with a lone surrogate (not a Unicode scalar value) cannot be stored"
                ) from None
        stored = encode_client_text(value)
        if self.max_length is not None and len(stored) > self.max_length:
            raise InvalidValue(
                f"a value {len(stored)} characters long as stored does not fit a column of "
                f"{self.max_length}"
            )
        return stored if dialect_named(dialect.name).postgres else value

    def process_result_value(self, value: str | None, dialect: Dialect) -> str | None:
        if value is None or not dialect_named(dialect.name).postgres:
            return value
        return decode_client_text(value)


class ClientText(ClientTextType):
    """Unbounded client text (``TEXT``)."""

    impl = Text
    cache_ok = True


class ClientString(ClientTextType):
    """Client text of at most ``length`` stored characters (``VARCHAR(length)``)."""

    impl = String
    cache_ok = True

    def __init__(self, length: int) -> None:
        super().__init__(length)
        self.max_length = length


INT32_MAX = 2**31 - 1


class BoundedInteger(TypeDecorator[int]):
    """An integer column that refuses, on every dialect alike, what it cannot hold: a
    4-byte ``INTEGER`` on PostgreSQL overflows at 2**31, SQLite's at 2**63, and the driver
    errors differ. Refused values raise ``InvalidValue``."""

    impl = Integer
    cache_ok = True

    @property
    def python_type(self) -> type[int]:
        return int

    def process_bind_param(self, value: Any, dialect: Dialect) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidValue(f"expected an integer, got {type(value).__name__}")
        if not -INT32_MAX - 1 <= value <= INT32_MAX:
            raise InvalidValue(f"{value} does not fit a 4-byte integer column")
        return value
