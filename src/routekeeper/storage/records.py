"""Records <-> rows, one way for every surface: a record is a frozen dataclass of the
contract whose fields are the table's columns; enum fields are stored as their values."""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

R = TypeVar("R")


def to_row(record: Any, *, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """The record's fields as column values (enums as their values)."""
    row = {}
    for name in _names(type(record)):
        if name in exclude:
            continue
        value = getattr(record, name)
        row[name] = value.value if isinstance(value, enum.Enum) else value
    return row


_NAMES: dict[type[Any], tuple[str, ...]] = {}


def _names(cls: type[Any]) -> tuple[str, ...]:
    """The field names of a record class, computed once (``dataclasses.fields`` is slow for
    a call per row)."""
    found = _NAMES.get(cls)
    if found is None:
        found = _NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return found


_UPDATABLE: dict[type[Any], frozenset[str] | None] = {}


def updated(record: R, **changes: Any) -> R:
    """``dataclasses.replace(record, **changes)`` for a record class whose ``__init__`` only
    sets fields (no ``__post_init__``, no ``__slots__``, no init-only or class-level field):
    the copy is made without running ``__init__`` again. A frozen record's ``__init__`` sets
    every field through ``object.__setattr__``, five times the cost of this on the request
    path, where a stored response is updated three times. Other classes go through
    ``replace``; a name that is not a field raises TypeError as ``replace`` does."""
    cls: Any = type(record)
    if cls not in _UPDATABLE:
        fields = dataclasses.fields(cls)
        plain = (
            not hasattr(cls, "__post_init__")
            and not hasattr(cls, "__slots__")
            and all(f.init for f in fields)
            and len(fields) == len(cls.__dataclass_fields__)  # no InitVar, no ClassVar
        )
        _UPDATABLE[cls] = frozenset(_names(cls)) if plain else None
    names = _UPDATABLE[cls]
    if names is None:
        return dataclasses.replace(record, **changes)  # type: ignore[type-var]
    unknown = changes.keys() - names
    if unknown:
        raise TypeError(f"{cls.__name__} has no field(s) {sorted(unknown)}")
    copy: R = object.__new__(cls)
    copy.__dict__.update(record.__dict__)
    copy.__dict__.update(changes)
    return copy


def plain(values: Mapping[str, Any]) -> dict[str, Any]:
    """Column values with enums as their values (for partial updates)."""
    return {k: (v.value if isinstance(v, enum.Enum) else v) for k, v in values.items()}


def from_row(cls: type[R], row: Any, **overrides: Any) -> R:
    """Build ``cls`` from a row (or mapping): enum fields are converted back, fields the row
    does not carry (a summary without bodies) take their declared default or None."""
    data = dict(row._mapping) if hasattr(row, "_mapping") else dict(row)
    data.update(overrides)
    values: dict[str, Any] = {}
    for name, enum_type in _fields(cls):
        if name not in data:
            continue
        value = data[name]
        values[name] = enum_type(value) if enum_type is not None and value is not None else value
    return cls(**values)


_FIELDS: dict[type[Any], tuple[tuple[str, type[enum.Enum] | None], ...]] = {}


def _fields(cls: type[Any]) -> tuple[tuple[str, type[enum.Enum] | None], ...]:
    """Each field's name and enum type (None when it holds no enum), computed once."""
    found = _FIELDS.get(cls)
    if found is None:
        hints = typing.get_type_hints(cls)
        found = _FIELDS[cls] = tuple(
            (f.name, _enum_in(hints[f.name])) for f in dataclasses.fields(cls)
        )
    return found


def _enum_in(hint: Any) -> type[enum.Enum] | None:
    """The enum type of ``E`` or ``E | None`` hints (None for anything else)."""
    candidates = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, enum.Enum):
            return candidate
    return None


def enum_fields(cls: type[Any]) -> dict[str, type[enum.Enum]]:
    """The fields of a record class that hold an enum (or None), with the enum type."""
    return {name: enum_type for name, enum_type in _fields(cls) if enum_type is not None}
