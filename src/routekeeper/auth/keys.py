"""The key check every request with ``auth.mode: api_key`` goes through, and the bounded
cache that keeps it off the database.

A request's secret is hashed (SHA-256) and looked up in the cache; an entry older than
``auth.cache_seconds`` is read again, so a revocation on another replica is seen within that
time (with ``redis.url``, at once: ``forget`` on the message ``auth/revocations.py`` hears).
While the database cannot be read, a key checked less than ``auth.offline_grace_seconds`` ago
keeps working; others get 503 ``storage_unavailable``. Unknown secrets are cached too (so a
stream of bad keys costs no database reads), in the same bounded LRU.

Off the request path, a background task writes last-used times (at most once a minute per
key), records ``key.used_after_revoke`` (at most once a minute per key) and ``key.expired``
audit events."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric

from routekeeper.contract.auth import (
    ANONYMOUS,
    Access,
    ApiKeyRecord,
    Principal,
    hash_secret,
    well_formed_secret,
)
from routekeeper.contract.errors import (
    Forbidden,
    StorageError,
    StorageUnavailable,
    Unauthenticated,
)
from routekeeper.sections.auth import AuthSettings
from routekeeper.storage.keys_store import ApiKeysStore
from routekeeper.storage.types import utcnow

if TYPE_CHECKING:
    from routekeeper.auth.revocations import RevocationChannel

log = logging.getLogger(__name__)

FLUSH_SECONDS = 5.0
"""How often last-used times and used-after-revoke events are written."""
EXPIRY_SWEEP_SECONDS = 60.0
NOTE_EVERY_SECONDS = 60.0


@dataclass
class _Entry:
    key: ApiKeyRecord | None
    """None: no key has this secret (as of ``verified``)."""
    verified: float
    """When the database last said so (monotonic)."""
    read_at: float
    """When to read it again (monotonic)."""


def bearer_secret(authorization: str | None) -> str:
    """The secret of an ``Authorization: Bearer <secret>`` header, or Unauthenticated."""
    if authorization is None:
        raise Unauthenticated(
            "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'."
        )
    scheme, _, secret = authorization.strip().partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not well_formed_secret(secret):
        raise Unauthenticated(
            "Malformed API key: expected 'Authorization: Bearer rk_...' with a routekeeper key."
        )
    return secret


class Authenticator:
    """Checks keys for one replica (the ``api_keys`` surface's background part)."""

    surface = "api_keys"

    def __init__(
        self,
        settings: AuthSettings,
        store: ApiKeysStore,
        *,
        redis_url: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``clock``: monotonic seconds (the cache's ages and the once-a-minute writes)."""
        self.clock = clock
        self.settings = settings
        self.enabled = settings.mode == "api_key"
        self.store = store
        self.channel: RevocationChannel | None = None
        if redis_url is not None:
            # Imported here: the Redis client is the optional `redis` extra.
            from routekeeper.auth.revocations import RevocationChannel

            self.channel = RevocationChannel(
                redis_url, on_revoked=self.forget, on_resubscribed=self.recheck
            )
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        # Secrets no key has, apart: a flood of made-up secrets never evicts a known key
        # (which would lose its offline grace and cost a read on its next use).
        self._unknown: OrderedDict[str, _Entry] = OrderedDict()
        self._used: dict[str, datetime] = {}
        self._used_written: dict[str, float] = {}
        self._revoked_uses: dict[str, tuple[ApiKeyRecord, datetime]] = {}
        self._revoked_noted: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self.counts = {"checks": 0, "reads": 0, "refused": 0, "offline_grace": 0}

    # -- the request path ---------------------------------------------------------------------

    async def authenticate(self, authorization: str | None, access: Access) -> Principal:
        """The principal a request acts for, or Unauthenticated (401), Forbidden (403,
        a member key on an admin route), StorageUnavailable (503: the key cannot be checked)."""
        if not self.enabled or access is Access.OPEN:
            return ANONYMOUS
        self.counts["checks"] += 1
        key = await self._lookup(hash_secret(bearer_secret(authorization)))
        now = utcnow()
        if key is None:
            self.counts["refused"] += 1
            raise Unauthenticated("Incorrect API key provided.")
        if key.revoked_at is not None:
            self.counts["refused"] += 1
            self._note_revoked_use(key, now)
            raise Unauthenticated(f"The API key {key.id} has been revoked.")
        if key.expires_at is not None and now >= key.expires_at:
            self.counts["refused"] += 1
            raise Unauthenticated(f"The API key {key.id} has expired.")
        if access is Access.ADMIN and not key.principal().admin:
            raise Forbidden(f"The API key {key.id} is a member key; this route needs an admin key.")
        self._used[key.id] = now
        return key.principal()

    async def _lookup(self, secret_hash: str) -> ApiKeyRecord | None:
        now = self.clock()
        entry = self._cache.get(secret_hash) or self._unknown.get(secret_hash)
        if entry is not None and now < entry.read_at:
            return entry.key
        try:
            self.counts["reads"] += 1
            key = await self.store.by_hash(secret_hash)
        except StorageError as exc:
            grace = self.settings.offline_grace_seconds
            if entry is not None and entry.key is not None and now - entry.verified < grace:
                # Known and checked recently enough: keep serving it, and try the database
                # again in a second rather than on every request.
                self.counts["offline_grace"] += 1
                entry.read_at = now + min(1.0, self.settings.cache_seconds)
                return entry.key
            raise StorageUnavailable(
                "API keys cannot be checked: the database is unavailable; retry shortly"
            ) from exc
        self._remember(secret_hash, _Entry(key, now, now + self.settings.cache_seconds))
        return key

    def _remember(self, secret_hash: str, entry: _Entry) -> None:
        known = entry.key is not None
        cache, other = (self._cache, self._unknown) if known else (self._unknown, self._cache)
        other.pop(secret_hash, None)
        cache[secret_hash] = entry
        cache.move_to_end(secret_hash)
        bound = self.settings.cache_size if known else max(100, self.settings.cache_size // 10)
        while len(cache) > bound:
            cache.popitem(last=False)

    def forget(self, key_id: str | None = None) -> None:
        """Drop a key's cache entry (every entry when ``key_id`` is None): the next request
        with it reads the database (a revocation made here or announced by another replica)."""
        if key_id is None:
            self._cache.clear()
            self._unknown.clear()
            return
        for secret_hash, entry in list(self._cache.items()):
            if entry.key is not None and entry.key.id == key_id:
                del self._cache[secret_hash]

    def recheck(self) -> None:
        """Read every cached key again on its next use (revocations may have been missed),
        keeping when each was last verified, so the offline grace still holds for them."""
        for entry in [*self._cache.values(), *self._unknown.values()]:
            entry.read_at = 0.0

    async def revoked(self, key_id: str) -> None:
        """A revocation was committed (here): refuse the key at once on this replica, and
        announce it to the others over Redis when configured (a failed announcement is
        logged and counted; they refuse the key within ``auth.cache_seconds`` anyway)."""
        self.forget(key_id)
        if self.channel is not None:
            await self.channel.publish(key_id)

    def _note_revoked_use(self, key: ApiKeyRecord, at: datetime) -> None:
        last = self._revoked_noted.get(key.id)
        now = self.clock()
        if last is not None and now - last < NOTE_EVERY_SECONDS:
            return
        self._revoked_noted[key.id] = now
        self._revoked_uses[key.id] = (key, at)
        self._wake.set()

    # -- background -------------------------------------------------------------------------

    def begin(self) -> None:
        if self.enabled and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
            if self.channel is not None:
                self.channel.begin()

    async def stop(self) -> None:
        if self.channel is not None:
            await self.channel.stop()
        if self._task is not None:
            # Ended at its next wait, not cancelled: a write cut off inside its transaction
            # can leave the connection unusable for the final flush.
            self._stopping = True
            self._wake.set()
            await self._task
            self._task = None
        await self.flush()

    async def _run(self) -> None:
        next_sweep = self.clock()
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), FLUSH_SECONDS)
            except TimeoutError:
                pass
            if self._stopping:
                return
            self._wake.clear()
            try:
                await self.flush()
                if self.clock() >= next_sweep:
                    await self.store.record_expired()
                    next_sweep = self.clock() + EXPIRY_SWEEP_SECONDS
            except StorageError as exc:
                log.warning("API key upkeep could not write: %s", exc.message)

    async def flush(self) -> None:
        """Write pending last-used times (each key at most once a minute) and
        used-after-revoke events. Kept for the next try when the database refuses."""
        now = self.clock()
        due = {
            key_id: at
            for key_id, at in self._used.items()
            if now - self._used_written.get(key_id, -NOTE_EVERY_SECONDS) >= NOTE_EVERY_SECONDS
        }
        uses = list(self._revoked_uses.values())
        if uses:
            await self.store.record_used_after_revoke(uses)
            self._revoked_uses.clear()
        if due:
            await self.store.touch(due)
            for key_id in due:
                self._used.pop(key_id, None)
                self._used_written[key_id] = now

    # -- reporting ------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        revocations = self.channel.status() if self.channel is not None else None
        return {
            "mode": self.settings.mode,
            "cached_keys": len(self._cache),
            **self.counts,
            "revocations": revocations,
        }

    def metrics(self) -> Iterable[Metric]:
        family = CounterMetricFamily(
            "routekeeper_auth_checks",
            "API key checks by outcome (reads: cache misses that read the database; "
            "offline_grace: keys served from the cache while the database was down).",
            labels=["outcome"],
        )
        for name, value in self.counts.items():
            family.add_metric([name], value)
        yield family
        if self.channel is not None:
            announced = CounterMetricFamily(
                "routekeeper_auth_revocation_messages",
                "Revocations announced over Redis: published by this replica, publishes "
                "Redis refused, heard from any replica, and reconnects of the listener.",
                labels=["outcome"],
            )
            for name, value in self.channel.counts.items():
                announced.add_metric([name], value)
            yield announced
