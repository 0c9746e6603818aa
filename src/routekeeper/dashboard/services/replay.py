"""Replay queries of the dashboard: lists, aggregates, sessions and single records."""

from __future__ import annotations

from typing import Any

from routekeeper.contract.pages import Page, SortOrder
from routekeeper.contract.replay import ReplayFilters, ReplayRecord
from routekeeper.storage.replay_store import ReplayStore
from routekeeper.storage.state import StateStorage


class ReplayQueries:
    def __init__(self, storage: StateStorage) -> None:
        self.store = storage.store(ReplayStore)

    async def list(
        self,
        filters: ReplayFilters,
        *,
        limit: int,
        order: SortOrder,
        after: str | None = None,
        before: str | None = None,
    ) -> Page[ReplayRecord]:
        """Summaries (no captured bodies), keyset pages."""
        return await self.store.list_records(
            filters, limit=limit, order=order, after=after, before=before
        )

    async def aggregate(self, filters: ReplayFilters) -> dict[str, Any]:
        return await self.store.aggregate(filters)

    async def session(
        self, session_id: str, *, tenant_id: str | None, limit: int, after: str | None = None
    ) -> Page[ReplayRecord]:
        """A session's records in the order they started (of one tenant, or every one)."""
        return await self.store.list_records(
            ReplayFilters(session_id=session_id, tenant_id=tenant_id),
            limit=limit,
            order=SortOrder.ASC,
            after=after,
        )

    async def get(self, replay_id: str, *, tenant_id: str | None) -> ReplayRecord:
        return await self.store.get(replay_id, tenant_id=tenant_id)
