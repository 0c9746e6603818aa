"""API keys and the audit log for the management API (``/api/keys``, ``/api/audit``): the
same operations the ``routekeeper keys`` command runs on the state directly."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

from routekeeper.contract.auth import ApiKeyRecord, AuditEvent, AuditFilters, Role
from routekeeper.contract.pages import Page, SortOrder
from routekeeper.storage.keys_store import ApiKeysStore
from routekeeper.storage.state import StateStorage

Revoked = Callable[[str], Awaitable[None]]
"""Told of every revocation once it is committed (this replica's cache, other replicas)."""


class KeyAdmin:
    def __init__(self, storage: StateStorage, revoked: Revoked) -> None:
        self.store = storage.store(ApiKeysStore)
        self.revoked = revoked

    async def create(
        self,
        *,
        tenant: str,
        label: str,
        role: Role,
        expires_in: timedelta | None,
        requests_per_minute: int | None,
        actor_key_id: str | None,
    ) -> tuple[ApiKeyRecord, str]:
        """A new key and its secret, committed (with its ``key.created`` event)."""
        return await self.store.create(
            tenant_id=tenant,
            label=label,
            role=role,
            expires_in=expires_in,
            requests_per_minute=requests_per_minute,
            actor_key_id=actor_key_id,
        )

    async def revoke(self, key_id: str, *, actor_key_id: str | None) -> ApiKeyRecord:
        record = await self.store.revoke(key_id, actor_key_id=actor_key_id)
        await self.revoked(key_id)
        return record

    async def get(self, key_id: str) -> ApiKeyRecord:
        return await self.store.get(key_id)

    async def list(
        self, *, tenant_id: str | None, limit: int, order: SortOrder, after: str | None
    ) -> Page[ApiKeyRecord]:
        return await self.store.list_keys(
            tenant_id=tenant_id, limit=limit, order=order, after=after
        )

    async def events(
        self, filters: AuditFilters, *, limit: int, order: SortOrder, after: str | None
    ) -> Page[AuditEvent]:
        return await self.store.list_events(filters, limit=limit, order=order, after=after)
