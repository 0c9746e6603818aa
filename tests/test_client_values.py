"""Every value a client can send is one the storage can hold: U+0000 (which PostgreSQL text
refuses), the escape character itself and any Unicode, in every text column of every
registered surface, on both dialects; out-of-range integers are refused alike on both."""

from datetime import UTC, datetime

import pytest
from sqlalchemy import JSON, Boolean, Float, String, Text, select

from routekeeper.contract.errors import InvalidValue
from routekeeper.storage.stores import surface_tables
from routekeeper.storage.types import (
    BoundedInteger,
    ClientTextType,
    UTCDateTime,
    decode_client_text,
    encode_client_text,
)

NASTY = "a\x00b\x10c\x10\x01d\x10\x10\x01é漢🙂\x00"


def _text_columns(table):
    return [c for c in table.c if isinstance(c.type, String | Text | ClientTextType)]


def test_every_text_column_of_every_surface_holds_client_text():
    """A new surface cannot forget the encoding: plain String/Text columns are refused."""
    plain = [
        f"{table.name}.{c.name}"
        for tables in surface_tables().values()
        for table in tables
        for c in _text_columns(table)
        if not isinstance(c.type, ClientTextType)
    ]
    assert plain == []


@pytest.mark.parametrize(
    "value", ["", "plain", "\x00", "\x10", "\x10\x01", "\x01", NASTY, "\x10" * 5 + "\x00" * 3]
)
def test_the_encoding_round_trips_and_leaves_plain_text_alone(value):
    encoded = encode_client_text(value)
    assert "\x00" not in encoded
    assert decode_client_text(encoded) == value
    if "\x00" not in value and "\x10" not in value:
        assert encoded == value


def _value_for(column):
    t = column.type
    if isinstance(t, ClientTextType):
        value = NASTY * 3
        length = getattr(t, "max_length", None)
        while length is not None and len(encode_client_text(value)) > length:
            value = value[:-1]  # bounded columns hold their length in stored characters
        return value
    if isinstance(t, BoundedInteger):
        return 7
    if isinstance(t, UTCDateTime):
        return datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    if isinstance(t, JSON):
        return {"text": NASTY, "list": [NASTY, 1]}
    if isinstance(t, Boolean):
        return True
    if isinstance(t, Float):
        return 1.5
    raise AssertionError(f"no test value for {column.table.name}.{column.name} ({t!r})")


async def test_nul_and_escapes_round_trip_in_every_surface_table(state_storage):
    checked = []
    for surface, tables in surface_tables().items():
        db = state_storage.database_for(surface)
        for table in tables:
            row = {c.name: _value_for(c) for c in table.c if c.autoincrement is not True}
            async with db.write() as conn:
                await conn.execute(table.insert(), [row])
            key = next(iter(table.primary_key.columns))
            async with db.read() as conn:
                query = select(table)
                if key.name in row:
                    query = query.where(key == row[key.name])  # filters encode too
                stored = dict((await conn.execute(query)).one()._mapping)
            for name, value in row.items():
                assert stored[name] == value, f"{table.name}.{name} on {db.dialect.name}"
            checked += [f"{table.name}.{c.name}" for c in _text_columns(table)]
    assert "router_replay.request_body" in checked and "router_replay.prompt_text" in checked


async def test_too_long_and_too_large_values_are_refused_alike(state_storage):
    from routekeeper.storage.schema.replay import router_replay

    db = state_storage.database_for("router_replay")
    row = {c.name: _value_for(c) for c in router_replay.c}
    for column, value in (
        ("session_id", "s" * 257),
        ("session_id", "\x00" * 129),  # 258 stored characters
        ("prompt_tokens", 2**31),
        ("total_tokens", 2**64),
        ("upstream_status", True),
        ("prompt_text", "ok \ud800 not"),  # a lone surrogate: valid JSON, not Unicode text
    ):
        bad = {**row, column: value}
        with pytest.raises(InvalidValue):
            async with db.write() as conn:
                await conn.execute(router_replay.insert(), [bad])
    async with db.read() as conn:
        assert (await conn.execute(select(router_replay))).all() == []
