"""Wake-ups of job streams and idle job slots when a job's events are committed.

A wake-up only says "look again": readers read the table, so a lost message delays, never
loses. In this process every commit wakes the readers of its job (and, when the job became
claimable, the idle slots) at once. Other processes hear of it through Redis pub/sub when
``redis.url`` is set, else through PostgreSQL LISTEN/NOTIFY (the store notifies in the
transaction, so nothing is announced before its commit); readers also look every
:attr:`JobWakeups.poll_seconds`: 100 ms while no channel connects processes (SQLite), 1 s
while one does."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Iterator
from typing import Any

from routekeeper.storage.config import PostgresBackend
from routekeeper.storage.jobs_store import JobsStore
from routekeeper.storage.jobs_writes import NOTIFY_CHANNEL
from routekeeper.tasks import cancel_and_wait

log = logging.getLogger(__name__)

REDIS_CHANNEL = "routekeeper:job_events"
FAST_POLL = 0.1
SLOW_POLL = 1.0
RECONNECT_SECONDS = 1.0


class JobWakeups:
    def __init__(self, store: JobsStore, *, redis_url: str | None = None) -> None:
        self.store = store
        self.redis_url = redis_url
        backend = store.db.backend
        self.postgres_dsn = backend.dsn if isinstance(backend, PostgresBackend) else None
        self._watchers: dict[str, set[asyncio.Event]] = {}
        self._idle: set[asyncio.Event] = set()
        self._listener: asyncio.Task[None] | None = None
        self._redis: Any = None
        self.connected = False
        """Whether a channel from the other processes is up now."""
        self.channel = "redis" if redis_url else "postgres" if self.postgres_dsn else "poll"
        store.published.append(self._committed)

    @property
    def poll_seconds(self) -> float:
        return SLOW_POLL if self.connected else FAST_POLL

    # -- waking ----------------------------------------------------------------------------

    def wake(self, job_id: str, claimable: bool) -> None:
        for event in self._watchers.get(job_id, ()):
            event.set()
        if claimable:
            for event in self._idle:
                event.set()

    def _committed(self, job_id: str, claimable: bool) -> Awaitable[None] | None:
        self.wake(job_id, claimable)
        if self._redis is not None:
            return self._publish(job_id, claimable)
        return None

    async def _publish(self, job_id: str, claimable: bool) -> None:
        try:
            await self._redis.publish(REDIS_CHANNEL, f"{job_id} claimable" if claimable else job_id)
        except Exception as exc:  # readers elsewhere still poll the table
            log.warning("job wake-up not published to Redis: %s", exc)

    def _received(self, payload: str) -> None:
        job_id, _, flag = payload.partition(" ")
        self.wake(job_id, flag == "claimable")

    @contextlib.contextmanager
    def watch(self, job_id: str) -> Iterator[asyncio.Event]:
        """An event set whenever the job's events may have changed (clear it, then read)."""
        event = asyncio.Event()
        self._watchers.setdefault(job_id, set()).add(event)
        try:
            yield event
        finally:
            watchers = self._watchers.get(job_id)
            if watchers is not None:
                watchers.discard(event)
                if not watchers:
                    del self._watchers[job_id]

    @contextlib.contextmanager
    def idle(self) -> Iterator[asyncio.Event]:
        """An event set whenever some job became claimable."""
        event = asyncio.Event()
        self._idle.add(event)
        try:
            yield event
        finally:
            self._idle.discard(event)

    # -- the channel between processes -----------------------------------------------------

    def begin(self) -> None:
        if self.channel == "poll" or self._listener is not None:
            return
        listen = self._listen_redis if self.channel == "redis" else self._listen_postgres
        self._listener = asyncio.create_task(self._keep(listen), name="job wake-ups")

    async def _keep(self, listen: Any) -> None:
        while True:
            try:
                await listen()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("job wake-ups (%s) lost: %s; reconnecting", self.channel, exc)
            self.connected = False
            await asyncio.sleep(RECONNECT_SECONDS)

    async def _listen_redis(self) -> None:
        import redis.asyncio as redis

        assert self.redis_url is not None
        client = redis.Redis.from_url(self.redis_url, socket_connect_timeout=3)
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe(REDIS_CHANNEL)
            self._redis = client
            self.connected = True
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    data = message["data"]
                    self._received(data.decode() if isinstance(data, bytes) else str(data))
        finally:
            self._redis = None
            self.connected = False
            with contextlib.suppress(Exception):
                await pubsub.aclose()
            with contextlib.suppress(Exception):
                await client.aclose()

    async def _listen_postgres(self) -> None:
        import psycopg

        assert self.postgres_dsn is not None
        conn = await psycopg.AsyncConnection.connect(
            self.postgres_dsn, autocommit=True, connect_timeout=3
        )
        try:
            await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
            self.connected = True
            async for notify in conn.notifies():
                self._received(notify.payload)
        finally:
            self.connected = False
            with contextlib.suppress(Exception):
                await conn.close()

    async def stop(self) -> None:
        if self._listener is not None:
            await cancel_and_wait(self._listener)
            self._listener = None
