"""Conversations for the dashboard: a filtered list (``GET /api/conversations``)."""

from __future__ import annotations

from routekeeper.contract.conversations import ConversationFilters, ConversationRecord
from routekeeper.contract.pages import Page, SortOrder
from routekeeper.storage.conversations_store import ConversationsStore
from routekeeper.storage.state import StateStorage


class ConversationQueries:
    def __init__(self, storage: StateStorage) -> None:
        self.store = storage.store(ConversationsStore)

    async def list(
        self,
        filters: ConversationFilters,
        *,
        limit: int,
        order: SortOrder,
        after: str | None = None,
        before: str | None = None,
    ) -> Page[ConversationRecord]:
        """Conversations by id (creation order), keyset pages."""
        return await self.store.list_conversations(
            filters, limit=limit, order=order, after=after, before=before
        )
