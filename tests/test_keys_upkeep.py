"""The api_keys surface's upkeep, on SQLite and PostgreSQL: ``key.expired`` audit events
(the running sweep and the startup recovery step, each once per key), ``key.used_after_revoke``
at most once a minute per key, and ``last_used_at`` written at most once a minute per key."""

from __future__ import annotations

from datetime import timedelta

import pytest

from routekeeper.auth.keys import NOTE_EVERY_SECONDS, Authenticator
from routekeeper.contract.auth import Access, AuditEventKind, AuditFilters, Role, new_secret
from routekeeper.contract.errors import Unauthenticated
from routekeeper.contract.pages import SortOrder
from routekeeper.sections.auth import AuthSettings
from routekeeper.storage.keys_store import ApiKeysStore
from routekeeper.storage.recovery import RecoveryContext
from routekeeper.storage.types import utcnow


class Clock:
    """Monotonic seconds the test moves forward itself."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def events(store: ApiKeysStore, kind: AuditEventKind, key_id: str | None = None):
    page = await store.list_events(
        AuditFilters(kind=kind, key_id=key_id), limit=100, order=SortOrder.ASC
    )
    return page.data


async def test_the_sweep_records_each_expiry_once(state_storage):
    store = state_storage.store(ApiKeysStore)
    soon, _ = await store.create(
        tenant_id="a", label="", role=Role.MEMBER, expires_in=timedelta(hours=1)
    )
    later, _ = await store.create(
        tenant_id="a", label="", role=Role.MEMBER, expires_in=timedelta(days=2)
    )
    never, _ = await store.create(tenant_id="b", label="", role=Role.ADMIN)
    now = utcnow()
    assert await store.record_expired(now) == 0
    assert await store.record_expired(now + timedelta(hours=2)) == 1
    assert await store.record_expired(now + timedelta(hours=3)) == 0
    assert await store.record_expired(now + timedelta(days=3)) == 1
    recorded = await events(store, AuditEventKind.KEY_EXPIRED)
    assert [(e.key_id, e.tenant_id) for e in recorded] == [(soon.id, "a"), (later.id, "a")]
    assert recorded[0].data == {"expires_at": soon.expires_at.isoformat()}
    assert never.id not in {e.key_id for e in recorded}


async def test_the_recovery_step_records_expiries_missed_while_nothing_ran(state_storage):
    store = state_storage.store(ApiKeysStore)
    gone, _ = await store.create(
        tenant_id="a", label="", role=Role.MEMBER, expires_in=timedelta(microseconds=1)
    )
    await store.create(tenant_id="a", label="", role=Role.MEMBER, expires_in=timedelta(days=1))
    ctx = RecoveryContext(state_storage, None, stale_after_seconds=10)
    (step,) = [s for s in store.recovery_steps() if s.surface == "api_keys"]
    dry = await step.run(ctx, True)
    assert dry.dry_run and dry.counts == {"expired": 1} and dry.findings
    assert await events(store, AuditEventKind.KEY_EXPIRED) == []
    fixed = await step.run(ctx, False)
    assert fixed.counts == {"expired": 1}
    again = await step.run(ctx, False)
    assert again.counts == {"expired": 0}
    assert [e.key_id for e in await events(store, AuditEventKind.KEY_EXPIRED)] == [gone.id]


async def test_a_revoked_key_in_use_is_an_audit_event_at_most_once_a_minute(state_storage):
    store = state_storage.store(ApiKeysStore)
    clock = Clock()
    auth = Authenticator(AuthSettings(mode="api_key"), store, clock=clock)
    key, secret = await store.create(tenant_id="a", label="", role=Role.MEMBER)
    other, other_secret = await store.create(tenant_id="b", label="", role=Role.MEMBER)
    await store.revoke(key.id)
    await store.revoke(other.id)

    async def refused(secret: str, times: int) -> None:
        for _ in range(times):
            with pytest.raises(Unauthenticated, match="revoked"):
                await auth.authenticate(f"Bearer {secret}", Access.MEMBER)
            clock.now += 1

    await refused(secret, 5)
    await refused(other_secret, 1)
    await auth.flush()
    await refused(secret, 20)  # the same minute
    await auth.flush()
    used = await events(store, AuditEventKind.KEY_USED_AFTER_REVOKE)
    assert sorted(e.key_id for e in used) == sorted([key.id, other.id])
    clock.now += NOTE_EVERY_SECONDS
    await refused(secret, 3)
    await auth.flush()
    assert len(await events(store, AuditEventKind.KEY_USED_AFTER_REVOKE, key.id)) == 2
    assert len(await events(store, AuditEventKind.KEY_USED_AFTER_REVOKE, other.id)) == 1


async def test_last_used_is_written_at_most_once_a_minute(state_storage):
    store = state_storage.store(ApiKeysStore)
    key, _ = await store.create(tenant_id="a", label="", role=Role.MEMBER)
    other, _ = await store.create(tenant_id="a", label="", role=Role.MEMBER)
    at = utcnow()
    assert await store.touch({key.id: at}) == 1
    assert await store.touch({key.id: at + timedelta(seconds=59), other.id: at}) == 1
    assert (await store.get(key.id)).last_used_at == at
    assert await store.touch({key.id: at + timedelta(seconds=61)}) == 1
    assert (await store.get(key.id)).last_used_at == at + timedelta(seconds=61)
    assert (await store.get(other.id)).last_used_at == at


async def test_requests_write_last_used_off_the_request_path_once_a_minute(state_storage):
    store = state_storage.store(ApiKeysStore)
    clock = Clock()
    auth = Authenticator(AuthSettings(mode="api_key"), store, clock=clock)
    key, secret = await store.create(tenant_id="a", label="", role=Role.MEMBER)
    principal = await auth.authenticate(f"Bearer {secret}", Access.MEMBER)
    assert principal.key_id == key.id and principal.tenant == "a"
    assert (await store.get(key.id)).last_used_at is None  # not on the request path
    await auth.flush()
    first = (await store.get(key.id)).last_used_at
    assert first is not None
    for _ in range(10):
        clock.now += 1
        await auth.authenticate(f"Bearer {secret}", Access.MEMBER)
        await auth.flush()
    assert (await store.get(key.id)).last_used_at == first
    assert auth.counts["reads"] < auth.counts["checks"]  # the cache kept most off the database


async def test_made_up_secrets_never_push_a_known_key_out_of_the_cache(state_storage):
    """Unknown secrets are cached apart (a tenth of auth.cache_size): a flood of them leaves
    the known key cached, so it is served without a read (and keeps its offline grace)."""
    store = state_storage.store(ApiKeysStore)
    _, secret = await store.create(tenant_id="alpha", label="", role=Role.MEMBER)
    clock = Clock()
    auth = Authenticator(AuthSettings(mode="api_key", cache_size=100), store, clock=clock)
    await auth.authenticate(f"Bearer {secret}", Access.MEMBER)
    reads = auth.counts["reads"]
    for _ in range(300):
        with pytest.raises(Unauthenticated):
            await auth.authenticate(f"Bearer {new_secret()}", Access.MEMBER)
    assert auth.counts["reads"] == reads + 300
    principal = await auth.authenticate(f"Bearer {secret}", Access.MEMBER)
    assert principal.tenant == "alpha"
    assert auth.counts["reads"] == reads + 300  # still cached: no read for it
