"""Stored responses for the dashboard: a filtered list (``GET /api/responses``)."""

from __future__ import annotations

from routekeeper.contract.pages import Page, SortOrder
from routekeeper.contract.responses import ResponseFilters, ResponseRecord
from routekeeper.storage.responses_store import ResponsesStore
from routekeeper.storage.state import StateStorage


class ResponseQueries:
    def __init__(self, storage: StateStorage) -> None:
        self.store = storage.store(ResponsesStore)

    async def list(
        self,
        filters: ResponseFilters,
        *,
        limit: int,
        order: SortOrder,
        after: str | None = None,
        before: str | None = None,
    ) -> Page[ResponseRecord]:
        """Responses by id (creation order), keyset pages."""
        return await self.store.list_responses(
            filters, limit=limit, order=order, after=after, before=before
        )
