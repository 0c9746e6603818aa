"""Revocations announced over Redis (``redis.url``): whoever commits a revocation (the
``/api/keys/{id}/revoke`` route on any replica, ``routekeeper keys revoke`` on the state
directly) publishes the key's id on one channel, and every replica, subscribed from the
moment it is ready, drops that key from its cache, so the next request with it reads the
database and is refused.

Redis only speeds revocation up; it is never the record of it. A message lost (Redis down,
a replica between two connections) costs at most ``auth.cache_seconds``, the delay without
Redis; on each (re)subscription a replica drops its whole cache, since it cannot know what
it missed. The listener reconnects with back-off and never blocks a request; a publish that
fails is logged and counted, and the revocation it announces stands.

Pub/sub channels are global to a Redis server (not per database number): routers sharing
one Redis hear each other's revocations, which costs them one cache read of a key they do
not have."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from redis import asyncio as aioredis
from redis.exceptions import RedisError

from routekeeper.storage.config import redact_dsn
from routekeeper.tasks import cancel_and_wait

log = logging.getLogger(__name__)

CHANNEL = "routekeeper:api_keys:revoked"
TIMEOUT_SECONDS = 2.0
"""Connect and command timeout: a publish never holds the revoking request longer."""
BACKOFF_SECONDS = (0.1, 5.0)
"""The listener's first and longest wait before reconnecting."""
HEALTH_CHECK_SECONDS = 5
"""How often an idle subscription pings Redis (a dead connection is noticed)."""
NOTE_EVERY_SECONDS = 60.0
FAILURES = (RedisError, OSError, ValueError)
"""What Redis, the network or a URL the client cannot use raise (settings check the scheme
only)."""


def _client(url: str) -> aioredis.Redis:
    return aioredis.Redis.from_url(
        url,
        socket_connect_timeout=TIMEOUT_SECONDS,
        socket_timeout=TIMEOUT_SECONDS,
        health_check_interval=HEALTH_CHECK_SECONDS,
        decode_responses=True,
    )


async def publish_revocation(url: str, key_id: str) -> None:
    """Announce one committed revocation (one connection, for a command run once, such as
    ``routekeeper keys revoke``). Raises RevocationNotAnnounced."""
    try:
        client = _client(url)
    except ValueError as exc:
        raise RevocationNotAnnounced(url, exc) from exc
    try:
        await client.publish(CHANNEL, key_id)
    except FAILURES as exc:
        raise RevocationNotAnnounced(url, exc) from exc
    finally:
        await client.aclose()


class RevocationNotAnnounced(Exception):
    """Redis did not take the message: replicas refuse the key within
    ``auth.cache_seconds`` instead."""

    def __init__(self, url: str, exc: BaseException) -> None:
        self.message = f"Redis at {redact_dsn(url)} did not take the revocation: {exc}"
        super().__init__(self.message)


class RevocationChannel:
    """One replica's end of the channel: ``publish`` after a revocation it committed, and a
    listener task that calls ``on_revoked(key_id)`` for every announced revocation and
    ``on_resubscribed()`` each time it (re)subscribes."""

    def __init__(
        self,
        url: str,
        *,
        on_revoked: Callable[[str], None],
        on_resubscribed: Callable[[], None],
    ) -> None:
        self.url = url
        self.where = redact_dsn(url)
        self.on_revoked = on_revoked
        self.on_resubscribed = on_resubscribed
        self._client: aioredis.Redis | None = None
        self._task: asyncio.Task[None] | None = None
        self._noted: dict[str, float] = {}
        self.subscribed = False
        self.counts = {"published": 0, "publish_failures": 0, "received": 0, "reconnects": 0}

    async def publish(self, key_id: str) -> bool:
        """Announce a committed revocation; False (logged, counted) when Redis refused."""
        try:
            if self._client is None:
                self._client = _client(self.url)
            await self._client.publish(CHANNEL, key_id)
        except FAILURES as exc:
            self.counts["publish_failures"] += 1
            self._note(
                "publish",
                "Redis at %s did not take the revocation of %s (%s); other replicas refuse "
                "the key within auth.cache_seconds",
                self.where,
                key_id,
                exc,
            )
            return False
        self.counts["published"] += 1
        return True

    def begin(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._listen())

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _listen(self) -> None:
        wait = BACKOFF_SECONDS[0]
        while True:
            try:
                await self._subscribed_session()
            except FAILURES as exc:
                self._note(
                    "listen",
                    "revocations from Redis at %s are not heard (%s); reconnecting, "
                    "meanwhile keys are re-read every auth.cache_seconds",
                    self.where,
                    exc,
                )
            if self.subscribed:
                wait = BACKOFF_SECONDS[0]  # it had worked: start the back-off again
            self.subscribed = False
            self.counts["reconnects"] += 1
            await asyncio.sleep(wait)
            wait = min(wait * 2, BACKOFF_SECONDS[1])

    async def _subscribed_session(self) -> None:
        client = _client(self.url)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(CHANNEL)
            # Revocations made while this replica was not subscribed were missed.
            self.on_resubscribed()
            if not self.subscribed:
                log.info("hearing revocations from Redis at %s", self.where)
            self.subscribed = True
            while True:
                message: dict[str, Any] | None = await pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=HEALTH_CHECK_SECONDS
                )
                if message is not None and message.get("type") == "message":
                    self.counts["received"] += 1
                    self.on_revoked(str(message["data"]))
        finally:
            try:
                await pubsub.aclose()
                await client.aclose()
            except FAILURES:
                pass

    def _note(self, what: str, message: str, *args: object) -> None:
        """Log a failure at most once a minute per kind (not once per retry)."""
        now = time.monotonic()
        if now - self._noted.get(what, -NOTE_EVERY_SECONDS) >= NOTE_EVERY_SECONDS:
            self._noted[what] = now
            log.warning(message, *args)

    def status(self) -> dict[str, Any]:
        return {"redis": self.where, "subscribed": self.subscribed, **self.counts}
