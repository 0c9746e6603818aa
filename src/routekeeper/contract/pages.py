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
    empty). ``has_more`` is true when more items exist beyond this page in the direction it was
    fetched: past ``last_id`` for a first page or an ``after`` page, before ``first_id`` for a
    ``before`` page."""

    data: Sequence[T]
    first_id: str | int | None
    last_id: str | int | None
    has_more: bool
