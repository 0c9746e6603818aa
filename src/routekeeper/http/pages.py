"""The ``/api`` list shape and its query parameters, shared by every list endpoint."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel

from routekeeper.contract.pages import MAX_PAGE_SIZE, Page, SortOrder

T = TypeVar("T")
R = TypeVar("R")


class ListPage(BaseModel, Generic[T]):
    """``{"data": [...], "first_id", "last_id", "has_more"}``."""

    data: list[T]
    first_id: str | int | None
    last_id: str | int | None
    has_more: bool

    @classmethod
    def of(cls, page: Page[R], convert: Callable[[R], T]) -> ListPage[T]:
        """A storage page with each record converted to its response model."""
        return cls(
            data=[convert(r) for r in page.data],
            first_id=page.first_id,
            last_id=page.last_id,
            has_more=page.has_more,
        )


Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description=f"Page size, 1-{MAX_PAGE_SIZE}.")]
Order = Annotated[SortOrder, Query(description="asc or desc (newest first).")]
