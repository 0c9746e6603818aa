"""``/api/keys`` (create, list, show, revoke API keys) and ``/api/audit`` (the audit log):
admin keys only. A created key's secret is in the create answer and nowhere else, ever."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field, field_validator

from routekeeper.contract.auth import (
    LABEL_MAX,
    TENANT_PATTERN,
    ApiKeyRecord,
    AuditEvent,
    AuditEventKind,
    AuditFilters,
    Role,
    parse_duration,
)
from routekeeper.contract.ids import id_pattern
from routekeeper.contract.pages import DEFAULT_PAGE_SIZE, SortOrder
from routekeeper.dashboard.query import TenantParam, api_router
from routekeeper.dashboard.routes.replay import time_window
from routekeeper.dashboard.services.keys import KeyAdmin
from routekeeper.http.access import Caller
from routekeeper.http.pages import Limit, ListPage, Order

KEY_ID = id_pattern("key")
KeyCursor = Annotated[str | None, Query(pattern=KEY_ID, description="An API key id.")]
AuditCursor = Annotated[
    str | None, Query(pattern=id_pattern("aud"), description="An audit event id.")
]
MAX_RPM = 1_000_000


class KeyOut(BaseModel):
    """An API key as the API shows it: never its secret nor the secret's hash."""

    id: str
    tenant: str
    label: str
    role: Role
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None = Field(description="Updated at most once a minute.")
    requests_per_minute: int | None

    @classmethod
    def of(cls, record: ApiKeyRecord) -> KeyOut:
        return cls(
            id=record.id,
            tenant=record.tenant_id,
            label=record.label,
            role=record.role,
            created_at=record.created_at,
            expires_at=record.expires_at,
            revoked_at=record.revoked_at,
            last_used_at=record.last_used_at,
            requests_per_minute=record.requests_per_minute,
        )


class CreatedKeyOut(KeyOut):
    secret: str = Field(description="The key itself: shown in this answer only, never again.")


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant: str = Field(pattern=TENANT_PATTERN, description="The tenant the key acts for.")
    label: str = Field("", max_length=LABEL_MAX, description="A name for people.")
    role: Role = Role.MEMBER
    expires_in: str | None = Field(
        None, description="Lifetime: a number and s, m, h, d or w (`30d`); none: no expiry."
    )
    requests_per_minute: int | None = Field(None, ge=1, le=MAX_RPM)

    @field_validator("label")
    @classmethod
    def _printable(cls, value: str) -> str:
        if not value.isprintable():
            raise ValueError("must be printable text (no control characters)")
        return value

    @field_validator("expires_in")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value

    def lifetime(self) -> timedelta | None:
        return parse_duration(self.expires_in) if self.expires_in is not None else None


class AuditEventOut(BaseModel):
    id: str
    kind: AuditEventKind
    occurred_at: datetime
    tenant: str
    key_id: str | None
    actor_key_id: str | None
    data: dict[str, Any]

    @classmethod
    def of(cls, event: AuditEvent) -> AuditEventOut:
        return cls(
            id=event.id,
            kind=event.kind,
            occurred_at=event.occurred_at,
            tenant=event.tenant_id,
            key_id=event.key_id,
            actor_key_id=event.actor_key_id,
            data=event.data,
        )


def audit_filters(
    caller: Caller,
    tenant: TenantParam = None,
    kind: AuditEventKind | None = None,
    key_id: Annotated[str | None, Query(pattern=KEY_ID)] = None,
    since: Annotated[datetime | None, Query(description="At or after (ISO).")] = None,
    until: Annotated[datetime | None, Query(description="Before (ISO).")] = None,
) -> AuditFilters:
    since, until = time_window(since, until)
    return AuditFilters(
        kind=kind,
        key_id=key_id,
        tenant_id=caller.tenant_filter(tenant),
        since=since,
        until=until,
    )


def router(keys: KeyAdmin) -> APIRouter:
    routes = api_router(prefix="/api", tags=["keys"])

    @routes.post("/keys", operation_id="create_key", status_code=201, response_model=CreatedKeyOut)
    async def create_key(body: KeyIn, caller: Caller) -> CreatedKeyOut:
        """A new key for ``tenant``; the answer holds its secret, which is never shown again."""
        record, secret = await keys.create(
            tenant=body.tenant,
            label=body.label,
            role=body.role,
            expires_in=body.lifetime(),
            requests_per_minute=body.requests_per_minute,
            actor_key_id=caller.key_id,
        )
        return CreatedKeyOut(**KeyOut.of(record).model_dump(), secret=secret)

    @routes.get("/keys", operation_id="list_keys", response_model=ListPage[KeyOut])
    async def list_keys(
        caller: Caller,
        tenant: TenantParam = None,
        limit: Limit = DEFAULT_PAGE_SIZE,
        order: Order = SortOrder.DESC,
        after: KeyCursor = None,
    ) -> ListPage[KeyOut]:
        """Keys, newest first (never their secrets)."""
        page = await keys.list(
            tenant_id=caller.tenant_filter(tenant), limit=limit, order=order, after=after
        )
        return ListPage.of(page, KeyOut.of)

    @routes.get("/keys/{key_id}", operation_id="get_key", response_model=KeyOut)
    async def get_key(key_id: Annotated[str, Path(pattern=KEY_ID)]) -> KeyOut:
        return KeyOut.of(await keys.get(key_id))

    @routes.post("/keys/{key_id}/revoke", operation_id="revoke_key", response_model=KeyOut)
    async def revoke_key(key_id: Annotated[str, Path(pattern=KEY_ID)], caller: Caller) -> KeyOut:
        """Revoke a key at once (every replica refuses it within a few seconds); revoking a
        revoked key changes nothing."""
        return KeyOut.of(await keys.revoke(key_id, actor_key_id=caller.key_id))

    @routes.get("/audit", operation_id="list_audit", response_model=ListPage[AuditEventOut])
    async def list_audit(
        filters: Annotated[AuditFilters, Depends(audit_filters)],
        limit: Limit = DEFAULT_PAGE_SIZE,
        order: Order = SortOrder.DESC,
        after: AuditCursor = None,
    ) -> ListPage[AuditEventOut]:
        """Audit events (key created, revoked, expired, used after revoke), newest first."""
        page = await keys.events(filters, limit=limit, order=order, after=after)
        return ListPage.of(page, AuditEventOut.of)

    return routes
