"""A page of a cursor-paginated list, as every list in routekeeper returns it."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 20


class SortOrder(enum.StrEnum):
    ASC = "asc"
    DESC = "desc"


@dataclass(frozen=True)
class Page(Generic[T]):
    """``data`` in list order; ``first_id``/``last_id`` are the cursors of its ends (None when
    empty); ``has_more`` is true when items exist past ``last_id`` in the same order."""

    data: Sequence[T]
    first_id: str | int | None
    last_id: str | int | None
    has_more: bool
