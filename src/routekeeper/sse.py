"""Server-sent events, the one way routekeeper streams: typed events that services yield, and
their framing on the wire that routes send. Pure standard library, so services, routes and
job streams all use it.

Framing: ``data: <payload>`` lines (a JSON payload never holds a newline), an optional ``id:``
(an event's integer id is what a reconnecting client sends back as ``Last-Event-ID``) and
``event:`` field, a blank line after each event; ``: ping`` comments keep idle connections
open; an error after the first byte is an in-band event, never a cut stream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from routekeeper.tasks import cancel_and_wait

T = TypeVar("T")

HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
"""Response headers of every stream (no caching, no proxy buffering; never compressed)."""
MEDIA_TYPE = "text/event-stream"


@dataclass(frozen=True)
class Data:
    """One event: ``payload`` is sent as it is (already-encoded JSON, or ``[DONE]``)."""

    payload: str
    id: int | None = None
    event: str | None = None


@dataclass(frozen=True)
class Ping:
    """A comment that keeps an idle connection open."""


PING = Ping()
DONE = Data("[DONE]")
"""OpenAI's end of a chat-completions stream."""


def error_event(body: dict[str, Any], *, event: str | None = None) -> Data:
    """An in-band error (after the first byte the status line is gone)."""
    return Data(json.dumps(body, separators=(",", ":")), event=event)


def encode(item: Data | Ping) -> str:
    """The wire form of one event."""
    if isinstance(item, Ping):
        return ": ping\n\n"
    head = ""
    if item.id is not None:
        head += f"id: {item.id}\n"
    if item.event is not None:
        head += f"event: {item.event}\n"
    return f"{head}data: {item.payload}\n\n"


async def encoded(events: AsyncGenerator[Data | Ping, None]) -> AsyncGenerator[str, None]:
    """The wire form of a stream of events. Closing it (the client left) closes ``events``
    at once, so whatever they hold (an upstream connection) is released now, not whenever
    the garbage collector finalizes them."""
    try:
        async for item in events:
            yield encode(item)
    finally:
        await events.aclose()


class Deadline:
    """Returned by :class:`Paced` when ``until()`` has passed: the stream must end now."""


DEADLINE = Deadline()


class Paced(Generic[T]):
    """The items of ``source``, with :data:`PING` after every ``ping_seconds`` of silence and
    :data:`DEADLINE` (then nothing) once the loop time ``until()`` returns has passed.

    One reader task feeds a small queue, so waiting can time out (for a ping or the deadline)
    without cancelling the source's read; an exception of the source is raised here.
    :meth:`aclose` stops the reader and waits for it: call it (shielded, when the caller is
    being cancelled) before closing what the source reads from."""

    def __init__(
        self,
        source: AsyncIterator[T],
        *,
        ping_seconds: float,
        until: Callable[[], float | None],
        queue_size: int = 64,
    ) -> None:
        self.source = source
        self.ping_seconds = ping_seconds
        self.until = until
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(maxsize=queue_size)
        self._reader: asyncio.Future[None] | None = None
        self._ended = False

    def __aiter__(self) -> Paced[T]:
        return self

    async def __anext__(self) -> T | Ping | Deadline:
        if self._ended:
            raise StopAsyncIteration
        if self._reader is None:
            self._reader = asyncio.ensure_future(self._read())
        loop = asyncio.get_running_loop()
        while True:
            wait = self.ping_seconds
            deadline = self.until()
            if deadline is not None:
                wait = min(wait, deadline - loop.time())
                if wait <= 0:
                    self._ended = True
                    return DEADLINE
            try:
                async with asyncio.timeout(wait):
                    what, value = await self._queue.get()
            except TimeoutError:
                if self.until() is None or wait == self.ping_seconds:
                    return PING
                continue
            if what == "item":
                return value  # type: ignore[no-any-return]
            self._ended = True
            if what == "error":
                raise value
            raise StopAsyncIteration

    async def _read(self) -> None:
        try:
            async for item in self.source:
                await self._queue.put(("item", item))
            await self._queue.put(("end", None))
        except Exception as exc:
            await self._queue.put(("error", exc))

    async def aclose(self) -> None:
        self._ended = True
        if self._reader is not None:
            await cancel_and_wait(self._reader)
