"""One chat exchange, from a validated request to its last byte: plan (route or pass
through), call the upstream, relay the stream, cancel the upstream when the client leaves or
the shutdown budget is about to end, check what the upstream sent, and report the outcome to
the replay trace, whose commit the answer waits for (``replay.durability: acknowledged``).

The route hands in the decoded request and a way to notice the client leaving, and gets back an
:class:`Exchange`: a JSON answer, an error (a contract error with its status and code) or a
stream of SSE events. No FastAPI here."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from routekeeper import sse
from routekeeper.contract.auth import ANONYMOUS, Principal
from routekeeper.contract.errors import RoutekeeperError, ShuttingDown
from routekeeper.contract.strict_json import loads_strict
from routekeeper.router.services.chat import ChatPlan, ChatService
from routekeeper.router.services.metrics import RouterMetrics
from routekeeper.router.services.replay import ReplayRecorder
from routekeeper.router.services.trace import RequestTrace
from routekeeper.tasks import cancel_and_wait
from routekeeper.upstream.errors import UpstreamError, UpstreamErrorKind

log = logging.getLogger(__name__)

T = TypeVar("T")
# Open streams end this long before the shutdown deadline, ahead of uvicorn's cancellation.
STREAM_SHUTDOWN_MARGIN_SECONDS = 2.0
SHUTTING_DOWN = "the server is shutting down; retry the request"
INTERNAL_ERROR = "internal error; see the server log"


class Replica(Protocol):
    """What an exchange needs of the replica serving it."""

    id: str
    shutting_down: asyncio.Event

    @property
    def shutdown_deadline(self) -> float | None: ...

    @property
    def accepting(self) -> bool: ...

    @property
    def phase(self) -> Any: ...


class InternalError(RoutekeeperError):
    """routekeeper itself failed while serving the request (a bug; see the server log)."""


@dataclass
class Exchange:
    """What the route sends: ``error`` (an envelope with its status), ``body`` (a JSON
    answer), ``events`` (a stream), or none of them when the client left first."""

    headers: dict[str, str]
    body: bytes | None = None
    error: RoutekeeperError | None = None
    events: AsyncGenerator[sse.Data | sse.Ping, None] | None = None
    gone: bool = False


class ClientGone(Exception):
    """The client disconnected before the upstream answered."""


class _Deadline(Exception):
    """The shutdown budget ran out before the upstream answered."""


def openai_error(message: str, code: str) -> dict[str, Any]:
    """OpenAI's error body of an in-band stream error."""
    return {"error": {"message": message, "type": "server_error", "param": None, "code": code}}


class Relay(Protocol):
    """What a caller makes of the exchange: the shape of its answer and what it stores about
    its outcome. The exchange owns the upstream call, the stream relay, cancel-on-disconnect
    and the replay trace; the relay is told what happened, in order, and gives the events or
    the body the client gets. :class:`ChatRelay` is the Chat Completions shape."""

    async def started(self, plan: ChatPlan, trace: RequestTrace) -> None:
        """The request is planned and traced, the upstream not called yet."""

    async def answer(self, data: dict[str, Any], encoded: str) -> bytes:
        """A non-streaming answer (checked JSON), after its trace finished (the wait for
        the replay commit runs beside it): the body to send. A contract error raised here is
        the answer."""

    async def ended_early(self, error: RoutekeeperError | None) -> None:
        """Ended before the first byte: ``error`` is the answer, or None (the client left)."""

    def opened(self) -> list[sse.Data]:
        """The stream's first events, before the upstream's first chunk."""

    def chunk(self, payload: str, data: dict[str, Any], keep_usage: bool) -> list[sse.Data]:
        """The events for one checked upstream chunk (``data`` is ``payload`` decoded)."""

    async def finished(self) -> list[sse.Data]:
        """The stream's last events, after its trace finished (the wait for the replay
        commit runs beside it; the events go out after both)."""

    async def failed(self, message: str, code: str) -> list[sse.Data]:
        """The in-band error ending the stream (after its trace finished)."""

    async def cancelled(self) -> None:
        """The stream ended (called shielded, however it ended): when nothing else finished
        it, the client left mid-stream."""


class ChatRelay:
    """Chat Completions: the upstream's answer and chunks as they are (usage dropped unless
    the client asked), ``[DONE]`` at the end, OpenAI's in-band error."""

    async def started(self, plan: ChatPlan, trace: RequestTrace) -> None:
        return None

    async def answer(self, data: dict[str, Any], encoded: str) -> bytes:
        try:
            return encoded.encode()
        except UnicodeEncodeError:  # a lone surrogate ("\ud800" in the upstream's JSON)
            return json.dumps(data, allow_nan=False, separators=(",", ":")).encode()  # escaped

    async def ended_early(self, error: RoutekeeperError | None) -> None:
        return None

    def opened(self) -> list[sse.Data]:
        return []

    def chunk(self, payload: str, data: dict[str, Any], keep_usage: bool) -> list[sse.Data]:
        relayed = _without_usage(payload, data, keep_usage=keep_usage)
        return [] if relayed is None else [sse.Data(relayed)]

    async def finished(self) -> list[sse.Data]:
        return [sse.DONE]

    async def failed(self, message: str, code: str) -> list[sse.Data]:
        return [sse.error_event(openai_error(message, code))]

    async def cancelled(self) -> None:
        return None


CHAT = ChatRelay()


class ChatExchanges:
    def __init__(
        self,
        chat: ChatService,
        recorder: ReplayRecorder,
        metrics: RouterMetrics,
        replica: Replica,
        *,
        ping_seconds: float,
    ) -> None:
        self.chat = chat
        self.recorder = recorder
        self.metrics = metrics
        self.replica = replica
        self.ping_seconds = ping_seconds

    @property
    def accepting(self) -> bool:
        """Whether requests that leave records may be served now (see ReplicaRuntime)."""
        return self.replica.accepting

    @property
    def phase(self) -> str:
        return str(self.replica.phase)

    async def run(
        self,
        payload: dict[str, Any],
        headers: Mapping[str, str],
        *,
        session_id: str | None,
        started: float,
        disconnected: Callable[[], Awaitable[None]],
        relay: Relay = CHAT,
        endpoint: str = "/v1/chat/completions",
        response_id: str | None = None,
        principal: Principal = ANONYMOUS,
    ) -> Exchange:
        """Serve one request (a chat completion, or another shape through ``relay``). Raises
        the contract's errors of the request itself (an unknown model); every failure after
        the trace exists is an :class:`Exchange` whose record says how it ended."""
        plan = await self.chat.plan(payload, headers)
        trace = RequestTrace(
            plan,
            recorder=self.recorder,
            metrics=self.metrics,
            replica_id=self.replica.id,
            requested_model=payload["model"],
            session_id=session_id,
            started=started,
            client_body=payload,
            endpoint=endpoint,
            response_id=response_id,
            principal=principal,
        )
        route = _routing_headers(plan)
        try:
            try:
                await relay.started(plan, trace)
            except RoutekeeperError as exc:  # e.g. storage unavailable: its own status
                trace.internal_error()
                return await self._answer_error(trace, route, exc)
            if plan.stream:
                return await self._open_stream(plan, trace, route, disconnected, relay)
            return await self._complete(plan, trace, route, disconnected, relay)
        except asyncio.CancelledError:
            trace.canceled()
            raise
        except Exception:  # never a record left in_progress, never an envelope-less 500
            log.exception("chat completion failed")
            return await self._failed(
                trace, route, InternalError("internal error; see the server log"), relay
            )

    async def _complete(
        self,
        plan: ChatPlan,
        trace: RequestTrace,
        route: dict[str, str],
        disconnected: Callable[[], Awaitable[None]],
        relay: Relay,
    ) -> Exchange:
        """A non-streaming exchange: the upstream's JSON answer (in the relay's shape), sent
        once its record is committed (acknowledged mode)."""
        try:
            data = await self._race(self.chat.transport(plan).complete(plan.body), disconnected)
            try:
                encoded = json.dumps(
                    data, ensure_ascii=False, allow_nan=False, separators=(",", ":")
                )
            except (ValueError, RecursionError):
                raise UpstreamError(
                    UpstreamErrorKind.PROTOCOL, "upstream sent an answer that cannot be relayed"
                ) from None
        except (UpstreamError, ClientGone, _Deadline) as exc:
            return await self._ended_early(exc, trace, route, relay)
        trace.mark_first_byte()
        if trace.captures_response:
            trace.capture_response(encoded)
        usage = data.get("usage")
        trace.usage = usage if isinstance(usage, dict) else None
        trace.completed()
        # The replay record's commit and the relay's own (a stored response) run side by
        # side; the answer waits for both.
        answer = asyncio.ensure_future(relay.answer(data, encoded))
        durable = await trace.acknowledged()
        headers = {**route, **trace.response_headers(durable)}
        try:
            body = await answer
        except RoutekeeperError as exc:
            return Exchange(headers, error=exc)
        return Exchange(headers, body=body)

    async def _open_stream(
        self,
        plan: ChatPlan,
        trace: RequestTrace,
        route: dict[str, str],
        disconnected: Callable[[], Awaitable[None]],
        relay: Relay,
    ) -> Exchange:
        """Open the upstream stream before answering, so a refused request still gets its
        own status; then relay it (:meth:`_events`)."""
        stack = AsyncExitStack()
        try:
            opened = stack.enter_async_context(self.chat.transport(plan).stream(plan.body))
            chunks = await self._race(opened, disconnected)
        except BaseException as exc:
            await stack.aclose()
            if isinstance(exc, UpstreamError | ClientGone | _Deadline):
                return await self._ended_early(exc, trace, route, relay)
            raise
        headers = {**route, **trace.response_headers(), **sse.HEADERS}
        return Exchange(headers, events=self._events(chunks, plan, stack, trace, relay))

    async def _ended_early(
        self, exc: Exception, trace: RequestTrace, route: dict[str, str], relay: Relay
    ) -> Exchange:
        """Ended before its first byte (upstream failure, client gone, shutdown): its own
        status, streaming or not."""
        error: RoutekeeperError | None = None
        if isinstance(exc, UpstreamError):
            trace.failed(exc)
            error = exc
        elif isinstance(exc, _Deadline):
            trace.shut_down()
            error = ShuttingDown(SHUTTING_DOWN)
        else:
            trace.canceled()
        await relay.ended_early(error)
        if error is None:
            return Exchange(route, gone=True)
        return await self._answer_error(trace, route, error)

    async def _failed(
        self, trace: RequestTrace, route: dict[str, str], error: RoutekeeperError, relay: Relay
    ) -> Exchange:
        trace.internal_error()
        try:
            await relay.ended_early(error)
        except Exception:  # the answer is the error whatever the relay could store
            log.exception("recording the failure failed")
        return await self._answer_error(trace, route, error)

    async def _answer_error(
        self, trace: RequestTrace, route: dict[str, str], error: RoutekeeperError
    ) -> Exchange:
        durable = await trace.acknowledged()
        return Exchange({**route, **trace.response_headers(durable)}, error=error)

    def _stream_deadline(self) -> float | None:
        deadline = self.replica.shutdown_deadline
        return None if deadline is None else deadline - STREAM_SHUTDOWN_MARGIN_SECONDS

    async def _race(
        self, awaitable: Awaitable[T], disconnected: Callable[[], Awaitable[None]]
    ) -> T:
        """Await the upstream, but cancel it (closing its connection) as soon as the client
        disconnects (an abandoned request must not hold an upstream slot until it times out),
        or when the shutdown budget is about to run out (so the client gets an answer)."""
        work = asyncio.ensure_future(awaitable)

        async def shutdown_due() -> None:
            await self.replica.shutting_down.wait()
            deadline = self._stream_deadline()
            if deadline is not None:
                await asyncio.sleep(max(0.0, deadline - asyncio.get_running_loop().time()))

        left = asyncio.ensure_future(disconnected())
        due = asyncio.ensure_future(shutdown_due())
        try:
            await asyncio.wait({work, left, due}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            left.cancel()
            due.cancel()
            if not work.done():
                await cancel_and_wait(work)
        if work.cancelled():
            raise ClientGone if left.done() and not left.cancelled() else _Deadline
        return work.result()

    async def _events(
        self,
        chunks: AsyncIterator[str],
        plan: ChatPlan,
        stack: AsyncExitStack,
        trace: RequestTrace,
        relay: Relay,
    ) -> AsyncGenerator[sse.Data | sse.Ping, None]:
        """Relay the upstream's chunks one by one. Usage was always requested upstream; it is
        recorded, and dropped here unless the client asked for it. A ping after every
        ``ping_seconds`` of silence. On SIGTERM an open stream ends in time with an in-band
        ``server_shutting_down`` error. The upstream connection is closed when this generator
        ends, including when the client disconnects (the server cancels it)."""
        paced = sse.Paced(chunks, ping_seconds=self.ping_seconds, until=self._stream_deadline)
        try:
            for event in relay.opened():
                yield event
            async for item in paced:
                if isinstance(item, sse.Deadline):
                    trace.shut_down()
                    await trace.acknowledged()
                    for event in await relay.failed(SHUTTING_DOWN, ShuttingDown.code):
                        yield event
                    return
                if isinstance(item, sse.Ping):
                    yield item
                    continue
                trace.mark_first_byte()
                data = _checked(item, trace)
                for event in relay.chunk(item, data, plan.client_wants_usage):
                    yield event
            # The terminal event goes out only once the record is committed (acknowledged),
            # and the relay's own commit (a stored response), which runs beside it.
            trace.completed()
            finished = asyncio.ensure_future(relay.finished())
            await trace.acknowledged()
            for event in await finished:
                yield event
        except UpstreamError as exc:
            trace.failed(exc)
            await trace.acknowledged()
            for event in await relay.failed(exc.message, exc.in_band_code):
                yield event
        except Exception:  # never a stream cut without an error event, nor a record left open
            log.exception("stream failed")
            trace.internal_error()
            await trace.acknowledged()
            for event in await relay.failed(INTERNAL_ERROR, InternalError.code):
                yield event
        finally:
            # Reached without an outcome only when the client went away (cancellation).
            trace.canceled()

            async def close_upstream() -> None:
                try:
                    await paced.aclose()
                    await stack.aclose()
                finally:
                    await relay.cancelled()

            # Shielded: a cancelled response (client gone) still closes the upstream
            # connection, which is what cancels the upstream request.
            await asyncio.shield(asyncio.ensure_future(close_upstream()))


def _routing_headers(plan: ChatPlan) -> dict[str, str]:
    headers = {"x-routekeeper-model": plan.model.name}
    if plan.decision is not None:
        headers["x-routekeeper-decision"] = plan.decision.name
    return headers


def _checked(payload: str, trace: RequestTrace) -> dict[str, Any]:
    """Check one upstream chunk (it must be a JSON object) and note its usage and content in
    the trace."""
    try:
        data = loads_strict(payload)
    except ValueError:
        raise UpstreamError(
            UpstreamErrorKind.PROTOCOL, "upstream sent a chunk that is not JSON"
        ) from None
    if not isinstance(data, dict):
        raise UpstreamError(
            UpstreamErrorKind.PROTOCOL, "upstream sent a chunk that is not an object"
        )
    usage = data.get("usage")
    if isinstance(usage, dict):
        trace.usage = usage
    if trace.captures_response:
        for choice in data.get("choices") or []:
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if isinstance(delta, dict) and isinstance(delta.get("content"), str):
                trace.capture_response(delta["content"])
    return data


def _without_usage(payload: str, data: dict[str, Any], *, keep_usage: bool) -> str | None:
    """What a chat client gets of a chunk: as sent, or without usage (None: nothing) if it
    did not ask for it."""
    if keep_usage or "usage" not in data:
        return payload
    if data.get("choices") == [] and data.get("usage") is not None:
        return None
    data.pop("usage")
    return json.dumps(data, separators=(",", ":"))
