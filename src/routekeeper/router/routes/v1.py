"""``POST /v1/chat/completions`` and ``GET /v1/models``: OpenAI-compatible, thin over
``router.services.chat``. Errors use OpenAI's envelope; errors after the first streamed byte
go in-band as ``data: {"error": {...}}``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import AsyncExitStack
from typing import Any, TypeVar

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from routekeeper.http.errors import ensure_json_safe, error_response, openai_error_body
from routekeeper.router.services.chat import ChatPlan, ChatService
from routekeeper.router.services.metrics import RouterMetrics
from routekeeper.router.services.trace import RequestTrace
from routekeeper.runtime.replica import ReplicaRuntime
from routekeeper.upstream.errors import UpstreamError, UpstreamErrorKind
from routekeeper.upstream.openai import loads_strict

router = APIRouter(prefix="/v1", tags=["openai"])

T = TypeVar("T")
CLIENT_CLOSED_REQUEST = 499  # nginx's convention; never seen by the departed client
# Open streams end this long before the shutdown deadline, ahead of uvicorn's cancellation.
STREAM_SHUTDOWN_MARGIN_SECONDS = 2.0
SESSION_ID_MAX = 256  # router_replay.session_id holds this many characters


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str = Field(min_length=1)
    content: str | list[dict[str, Any]] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool | None = None


class ChatCompletionRequest(BaseModel):
    """The fields routekeeper reads; every other OpenAI field is passed through untouched."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1, max_length=256)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None


def _service(request: Request) -> ChatService:
    service: ChatService = request.app.state.chat
    return service


def _metrics(request: Request) -> RouterMetrics:
    metrics: RouterMetrics = request.app.state.metrics
    return metrics


def _routing_headers(plan: ChatPlan) -> dict[str, str]:
    headers = {"x-routekeeper-model": plan.model.name}
    if plan.decision is not None:
        headers["x-routekeeper-decision"] = plan.decision.name
    return headers


def upstream_error_response(
    request: Request, exc: UpstreamError, headers: dict[str, str]
) -> JSONResponse:
    """Upstream 4xx/5xx keep their status, except 401/403 (routekeeper's credentials, not
    the client's, were refused): 502. Timeouts 504, unreachable or broken upstreams 502."""
    extra = dict(headers)
    param: str | None = None
    if exc.kind is UpstreamErrorKind.HTTP and exc.status is not None:
        status, message = exc.status, exc.upstream_message()
        # The upstream's own code (e.g. context_length_exceeded) and param reach the client.
        code = exc.upstream_field("code") or "upstream_error"
        param = exc.upstream_field("param")
        if status in (401, 403):
            status, code = 502, "upstream_auth_failed"
            message = f"the upstream refused routekeeper's credentials ({exc.status}): {message}"
        elif status == 429:
            code = exc.upstream_field("code") or "rate_limited"
            if exc.retry_after:
                extra["retry-after"] = exc.retry_after
        elif status < 400 or status > 599:
            status = 502
    elif exc.kind is UpstreamErrorKind.TIMEOUT:
        status, code, message = 504, upstream_error_code(exc), exc.message
    elif exc.kind is UpstreamErrorKind.CONNECT:
        status, code, message = 502, upstream_error_code(exc), exc.message
    else:
        status, code, message = 502, upstream_error_code(exc), exc.message
    return error_response(request, status, code, message, param=param, headers=extra)


def upstream_error_code(exc: UpstreamError) -> str:
    """The ``code`` routekeeper gives an upstream failure (before or after the first byte)."""
    return {
        UpstreamErrorKind.HTTP: "upstream_error",
        UpstreamErrorKind.TIMEOUT: "upstream_timeout",
        UpstreamErrorKind.CONNECT: "upstream_unreachable",
        UpstreamErrorKind.PROTOCOL: "upstream_protocol_error",
    }[exc.kind]


@router.post("/chat/completions", operation_id="create_chat_completion", response_model=None)
async def create_chat_completion(request: Request, body: ChatCompletionRequest) -> Response:
    started = time.perf_counter()
    runtime: ReplicaRuntime = request.app.state.runtime
    if not runtime.accepting:
        # Before the replica is ready its records could not be stored (the writer starts
        # with readiness): refuse rather than acknowledge what may be lost.
        return error_response(
            request,
            503,
            "not_ready",
            f"routekeeper is not ready yet (phase: {runtime.phase.value}); retry shortly",
            headers={"retry-after": "1"},
        )
    session_id = request.headers.get("x-session-id")
    if session_id is not None and len(session_id) > SESSION_ID_MAX:
        return error_response(
            request,
            400,
            "invalid_session_id",
            f"x-session-id must be at most {SESSION_ID_MAX} characters (got {len(session_id)})",
            param="x-session-id",
        )
    service = _service(request)
    payload = body.model_dump(exclude_unset=True)
    ensure_json_safe(payload)
    plan = await service.plan(payload, request.headers)
    trace = RequestTrace(
        plan,
        recorder=request.app.state.recorder,
        metrics=_metrics(request),
        replica_id=runtime.id,
        requested_model=body.model,
        session_id=session_id,
        started=started,
        client_body=payload,
    )
    headers = _routing_headers(plan)
    transport = service.transport(plan)
    if not plan.stream:
        try:
            data = await _unless_client_leaves(request, transport.complete(plan.body))
        except UpstreamError as exc:
            trace.failed(exc)
            durable = await trace.acknowledged()
            return upstream_error_response(
                request, exc, {**headers, **trace.response_headers(durable)}
            )
        except ClientGone:
            trace.canceled()
            return Response(status_code=CLIENT_CLOSED_REQUEST)  # nobody is listening
        except asyncio.CancelledError:
            trace.canceled()
            raise
        trace.mark_first_byte()
        if trace.captures_response:
            trace.capture_response(json.dumps(data, ensure_ascii=False))
        usage = data.get("usage")
        trace.usage = usage if isinstance(usage, dict) else None
        trace.completed()
        durable = await trace.acknowledged()
        return JSONResponse(data, headers={**headers, **trace.response_headers(durable)})

    stack = AsyncExitStack()
    try:
        chunks = await _unless_client_leaves(
            request, stack.enter_async_context(transport.stream(plan.body))
        )
    except UpstreamError as exc:
        await stack.aclose()
        trace.failed(exc)
        durable = await trace.acknowledged()
        return upstream_error_response(request, exc, {**headers, **trace.response_headers(durable)})
    except (ClientGone, asyncio.CancelledError) as exc:
        await stack.aclose()
        trace.canceled()
        if isinstance(exc, ClientGone):
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        raise
    return StreamingResponse(
        _sse(
            chunks, plan, stack, trace, runtime, request.app.state.settings.server.sse_ping_seconds
        ),
        media_type="text/event-stream",
        headers={
            **headers,
            **trace.response_headers(),
            "cache-control": "no-cache",
            "x-accel-buffering": "no",
        },
    )


class ClientGone(Exception):
    """The client disconnected before the upstream answered."""


async def _unless_client_leaves(request: Request, awaitable: Awaitable[T]) -> T:
    """Await the upstream, but cancel it (closing its connection) as soon as the client
    disconnects: an abandoned request must not hold an upstream slot until it times out."""
    work = asyncio.ensure_future(awaitable)

    async def client_left() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(client_left())
    try:
        await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not work.done():
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await work
    if work.cancelled():
        raise ClientGone
    return work.result()


async def _sse(
    chunks: AsyncIterator[str],
    plan: ChatPlan,
    stack: AsyncExitStack,
    trace: RequestTrace,
    runtime: ReplicaRuntime,
    ping_seconds: float,
) -> AsyncIterator[str]:
    """Relay the upstream's chunks one by one. Usage was always requested upstream; it is
    recorded, and dropped here unless the client asked for it. A ``: ping`` comment goes out
    after every ``ping_seconds`` of silence. On SIGTERM an open stream ends in time with an
    in-band ``server_shutting_down`` error. The upstream connection is closed when this
    generator ends, including when the client disconnects (Starlette cancels it)."""
    loop = asyncio.get_running_loop()
    # One reader task per stream feeds a small queue; waiting on the queue can time out (for
    # pings and shutdown) without cancelling the upstream read, and costs no task per chunk.
    queue: asyncio.Queue[str | BaseException | None] = asyncio.Queue(maxsize=64)

    async def read_upstream() -> None:
        try:
            async for payload in chunks:
                await queue.put(payload)
            await queue.put(None)
        except UpstreamError as exc:
            await queue.put(exc)

    reader = asyncio.ensure_future(read_upstream())
    try:
        while True:
            wait = ping_seconds
            deadline = runtime.shutdown_deadline
            if deadline is not None:
                wait = min(wait, deadline - STREAM_SHUTDOWN_MARGIN_SECONDS - loop.time())
                if wait <= 0:
                    error = openai_error_body(
                        "the server is shutting down; retry the request",
                        type_="server_error",
                        code="server_shutting_down",
                    )
                    yield f"data: {json.dumps(error)}\n\n"
                    trace.canceled()
                    return
            try:
                async with asyncio.timeout(wait):
                    item = await queue.get()
            except TimeoutError:
                if runtime.shutdown_deadline is None or wait == ping_seconds:
                    yield ": ping\n\n"
                continue
            if item is None:
                break
            if isinstance(item, BaseException):
                raise item
            trace.mark_first_byte()
            relayed = _relay(item, trace, keep_usage=plan.client_wants_usage)
            if relayed is not None:
                yield f"data: {relayed}\n\n"
        # The terminal event goes out only once the record is committed (acknowledged mode).
        trace.completed()
        await trace.acknowledged()
        yield "data: [DONE]\n\n"
    except UpstreamError as exc:
        trace.failed(exc)
        await trace.acknowledged()
        error = openai_error_body(exc.message, type_="server_error", code=upstream_error_code(exc))
        yield f"data: {json.dumps(error)}\n\n"
    finally:
        # Reached without an outcome only when the client went away (cancellation).
        trace.canceled()

        async def close_upstream() -> None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            await stack.aclose()

        # Shielded: a cancelled response (client gone) still closes the upstream connection,
        # which is what cancels the upstream request.
        await asyncio.shield(asyncio.ensure_future(close_upstream()))


def _relay(payload: str, trace: RequestTrace, *, keep_usage: bool) -> str | None:
    """Check one upstream chunk (it must be a JSON object), note its usage, and return what
    the client gets: the chunk as sent, or without usage (None: nothing) if it did not ask."""
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
    if keep_usage or "usage" not in data:
        return payload
    if data.get("choices") == [] and usage is not None:
        return None
    data.pop("usage")
    return json.dumps(data, separators=(",", ":"))


@router.get("/models", operation_id="list_models")
async def list_models(request: Request) -> dict[str, Any]:
    """Configured models, then the auto names that route."""
    return {
        "object": "list",
        "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": "routekeeper"}
            for name in _service(request).model_names()
        ],
    }
