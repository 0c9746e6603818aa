"""The store of the ``api_keys`` and ``audit_events`` surfaces (colocated: every key change
appends its audit event in the same transaction).

Reads by secret hash are what every authenticated request needs (through the key cache of
``routekeeper.auth``); the secret itself never reaches this module."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, exists, insert, or_, select, update
from sqlalchemy.engine import Connection

from routekeeper.contract.auth import (
    ApiKeyRecord,
    AuditEvent,
    AuditEventKind,
    AuditFilters,
    Role,
    hash_secret,
    new_secret,
)
from routekeeper.contract.errors import NotFound
from routekeeper.contract.ids import new_id
from routekeeper.contract.pages import Page, SortOrder
from routekeeper.storage.records import from_row, to_row
from routekeeper.storage.recovery import RecoveryContext, RecoveryReport, RecoveryStep
from routekeeper.storage.schema.auth import api_keys, audit_events
from routekeeper.storage.surface_store import RetentionRule, SurfaceStore
from routekeeper.storage.types import utcnow

LAST_USED_EVERY = timedelta(minutes=1)
"""A key's ``last_used_at`` is written at most this often."""


def _key(row: Any) -> ApiKeyRecord:
    return from_row(ApiKeyRecord, row)


def _event(row: Any) -> AuditEvent:
    return from_row(AuditEvent, row)


def append_event(
    conn: Connection,
    kind: AuditEventKind,
    *,
    tenant_id: str,
    key_id: str | None = None,
    actor_key_id: str | None = None,
    data: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> AuditEvent:
    """Append one audit event inside the caller's write transaction."""
    event = AuditEvent(
        id=new_id("aud"),
        kind=kind,
        occurred_at=at or utcnow(),
        tenant_id=tenant_id,
        key_id=key_id,
        actor_key_id=actor_key_id,
        data=data or {},
    )
    conn.execute(insert(audit_events).values(to_row(event)))
    return event


class ApiKeysStore(SurfaceStore):
    tables = {"api_keys": (api_keys,), "audit_events": (audit_events,)}
    records = {api_keys.name: ApiKeyRecord, audit_events.name: AuditEvent}
    retention = {"audit_events": RetentionRule(audit_events, age_column="occurred_at")}

    def recovery_steps(self) -> Sequence[RecoveryStep]:
        return (
            RecoveryStep(
                surface="api_keys",
                description="keys whose expiry passed get their key.expired audit event",
                run=self.recover,
            ),
        )

    async def recover(self, ctx: RecoveryContext, dry_run: bool) -> RecoveryReport:
        if dry_run:
            due = await self._expired_unrecorded(utcnow())
            findings = [f"{len(due)} expired key(s) without their key.expired event"] if due else []
            return RecoveryReport("api_keys", {"expired": len(due)}, True, findings)
        return RecoveryReport("api_keys", {"expired": await self.record_expired()}, False)

    # -- writes ------------------------------------------------------------------------------

    async def create(
        self,
        *,
        tenant_id: str,
        label: str,
        role: Role,
        expires_in: timedelta | None = None,
        requests_per_minute: int | None = None,
        actor_key_id: str | None = None,
    ) -> tuple[ApiKeyRecord, str]:
        """A new key and its secret (the only time the secret exists outside the client),
        with its ``key.created`` event, committed before this returns."""
        secret = new_secret()
        now = utcnow()
        record = ApiKeyRecord(
            id=new_id("key"),
            tenant_id=tenant_id,
            label=label,
            role=role,
            secret_hash=hash_secret(secret),
            created_at=now,
            expires_at=now + expires_in if expires_in is not None else None,
            requests_per_minute=requests_per_minute,
        )

        def write(conn: Connection) -> None:
            conn.execute(insert(api_keys).values(to_row(record)))
            append_event(
                conn,
                AuditEventKind.KEY_CREATED,
                tenant_id=tenant_id,
                key_id=record.id,
                actor_key_id=actor_key_id,
                data={"role": role.value, "label": label},
                at=now,
            )

        await self.db.run_write(write)
        return record, secret

    async def revoke(
        self, key_id: str, *, actor_key_id: str | None = None, tenant_id: str | None = None
    ) -> ApiKeyRecord:
        """Revoke a key (idempotent: a revoked key keeps its first revocation time and gets
        no second event). NotFound when there is no such key (in ``tenant_id``, if given)."""
        now = utcnow()

        def write(conn: Connection) -> ApiKeyRecord:
            query = select(api_keys).where(api_keys.c.id == key_id)
            if tenant_id is not None:
                query = query.where(api_keys.c.tenant_id == tenant_id)
            row = conn.execute(self.db.dialect.for_update(query)).one_or_none()
            if row is None:
                raise NotFound(f"no API key {key_id}")
            if row.revoked_at is not None:
                return _key(row)
            conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(revoked_at=now))
            append_event(
                conn,
                AuditEventKind.KEY_REVOKED,
                tenant_id=row.tenant_id,
                key_id=key_id,
                actor_key_id=actor_key_id,
                at=now,
            )
            return from_row(ApiKeyRecord, row, revoked_at=now)

        return await self.db.run_write(write)

    async def touch(self, used: dict[str, datetime]) -> int:
        """Write last-used times (key id -> when), skipping keys whose stored time is less
        than a minute older; returns how many rows changed."""
        if not used:
            return 0

        def write(conn: Connection) -> int:
            changed = 0
            for key_id, at in used.items():
                result = conn.execute(
                    update(api_keys)
                    .where(api_keys.c.id == key_id)
                    .where(
                        or_(
                            api_keys.c.last_used_at.is_(None),
                            api_keys.c.last_used_at <= at - LAST_USED_EVERY,
                        )
                    )
                    .values(last_used_at=at)
                )
                changed += int(result.rowcount)
            return changed

        return await self.db.run_write(write)

    async def record_used_after_revoke(self, uses: Iterable[tuple[ApiKeyRecord, datetime]]) -> int:
        """One ``key.used_after_revoke`` event per (key, first use seen)."""
        rows = list(uses)
        if not rows:
            return 0

        def write(conn: Connection) -> int:
            for key, at in rows:
                append_event(
                    conn,
                    AuditEventKind.KEY_USED_AFTER_REVOKE,
                    tenant_id=key.tenant_id,
                    key_id=key.id,
                    at=at,
                )
            return len(rows)

        return await self.db.run_write(write)

    async def record_expired(self, now: datetime | None = None) -> int:
        """Append ``key.expired`` for every key past its expiry that has none yet."""
        at = now or utcnow()

        def write(conn: Connection) -> int:
            due = conn.execute(self._expired_query(at)).all()
            for row in due:
                append_event(
                    conn,
                    AuditEventKind.KEY_EXPIRED,
                    tenant_id=row.tenant_id,
                    key_id=row.id,
                    data={"expires_at": row.expires_at.isoformat()},
                    at=at,
                )
            return len(due)

        return await self.db.run_write(write)

    # -- reads -------------------------------------------------------------------------------

    def _expired_query(self, at: datetime) -> Any:
        recorded = exists().where(
            and_(
                audit_events.c.key_id == api_keys.c.id,
                audit_events.c.kind == AuditEventKind.KEY_EXPIRED.value,
            )
        )
        return (
            select(api_keys.c.id, api_keys.c.tenant_id, api_keys.c.expires_at)
            .where(api_keys.c.expires_at.is_not(None))
            .where(api_keys.c.expires_at <= at)
            .where(~recorded)
            .order_by(api_keys.c.id)
        )

    async def _expired_unrecorded(self, at: datetime) -> list[str]:
        async with self.db.read() as conn:
            return [row.id for row in await conn.execute(self._expired_query(at))]

    async def by_hash(self, secret_hash: str) -> ApiKeyRecord | None:
        """The key whose secret hashes to ``secret_hash`` (any state), or None."""
        async with self.db.read() as conn:
            row = (
                await conn.execute(select(api_keys).where(api_keys.c.secret_hash == secret_hash))
            ).one_or_none()
        return None if row is None else _key(row)

    async def get(self, key_id: str, *, tenant_id: str | None = None) -> ApiKeyRecord:
        where = api_keys.c.tenant_id == tenant_id if tenant_id is not None else None
        return await self._one(api_keys, key_id, _key, "API key", where=where)

    async def list_keys(
        self,
        *,
        tenant_id: str | None,
        limit: int,
        order: SortOrder = SortOrder.DESC,
        after: str | None = None,
        before: str | None = None,
    ) -> Page[ApiKeyRecord]:
        query = select(api_keys)
        if tenant_id is not None:
            query = query.where(api_keys.c.tenant_id == tenant_id)
        return await self._page(
            query, api_keys.c.id, _key, limit=limit, order=order, after=after, before=before
        )

    async def list_events(
        self,
        filters: AuditFilters,
        *,
        limit: int,
        order: SortOrder = SortOrder.DESC,
        after: str | None = None,
        before: str | None = None,
    ) -> Page[AuditEvent]:
        c = audit_events.c
        query = select(audit_events)
        if filters.tenant_id is not None:
            query = query.where(c.tenant_id == filters.tenant_id)
        if filters.kind is not None:
            query = query.where(c.kind == filters.kind.value)
        if filters.key_id is not None:
            query = query.where(c.key_id == filters.key_id)
        if filters.since is not None:
            query = query.where(c.occurred_at >= filters.since)
        if filters.until is not None:
            query = query.where(c.occurred_at < filters.until)
        return await self._page(
            query, c.id, _event, limit=limit, order=order, after=after, before=before
        )
