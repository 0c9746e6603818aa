"""``POST /v1/chat/completions``, ``GET /v1/models`` and ``GET /v1/models/{id}``:
OpenAI-compatible, thin over ``router.services.chat``. Errors use OpenAI's envelope; errors
after the first streamed byte go in-band as ``data: {"error": {...}}``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import AsyncExitStack
from typing import Any, TypeVar

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from routekeeper.contract.errors import InvalidRequest
from routekeeper.contract.strict_json import loads_strict
from routekeeper.http.body import decode_json_body
from routekeeper.http.errors import ensure_json_safe, error_response, openai_error_body
from routekeeper.router.services.chat import ChatPlan, ChatService, ModelNotFound
from routekeeper.router.services.chat_request import chat_request_schema, validate_chat_request
from routekeeper.router.services.metrics import RouterMetrics
from routekeeper.router.services.trace import RequestTrace
from routekeeper.runtime.replica import ReplicaRuntime
from routekeeper.upstream.base import ModelTransport
from routekeeper.upstream.errors import UpstreamError, UpstreamErrorKind

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["openai"])

T = TypeVar("T")
CLIENT_CLOSED_REQUEST = 499  # nginx's convention; never seen by the departed client
# Open streams end this long before the shutdown deadline, ahead of uvicorn's cancellation.
STREAM_SHUTDOWN_MARGIN_SECONDS = 2.0
SESSION_ID_MAX = 256  # router_replay.session_id holds this many characters


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


@router.post(
    "/chat/completions",
    operation_id="create_chat_completion",
    response_model=None,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": chat_request_schema()}},
        }
    },
)
async def create_chat_completion(request: Request) -> Response:
    """OpenAI's Chat Completions: routed (an auto model name) or passed through (a configured
    model). The body is checked field by field (400 naming ``param``); unknown fields pass
    through to the upstream."""
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
    if session_id is not None and (
        len(session_id) > SESSION_ID_MAX or not session_id.isprintable()
    ):
        raise InvalidRequest(
            f"x-session-id must be at most {SESSION_ID_MAX} printable characters "
            f"(got {len(session_id)})",
            param="x-session-id",
            code="invalid_session_id",
        )
    payload = validate_chat_request(decode_json_body(await request.body(), request.headers))
    ensure_json_safe(payload)
    service = _service(request)
    plan = await service.plan(payload, request.headers)
    trace = RequestTrace(
        plan,
        recorder=request.app.state.recorder,
        metrics=_metrics(request),
        replica_id=runtime.id,
        requested_model=payload["model"],
        session_id=session_id,
        started=started,
        client_body=payload,
    )
    headers = _routing_headers(plan)
    transport = service.transport(plan)
    if not plan.stream:
        try:
            return await _complete(request, runtime, transport, plan, trace, headers)
        except asyncio.CancelledError:
            trace.canceled()
            raise
        except Exception:  # never a record left in_progress, never an envelope-less 500
            log.exception("chat completion failed")
            return await _internal_error(request, trace, headers)

    stack = AsyncExitStack()
    try:
        chunks = await _race(
            request, runtime, stack.enter_async_context(transport.stream(plan.body))
        )
    except asyncio.CancelledError:
        await stack.aclose()
        trace.canceled()
        raise
    except Exception as exc:
        await stack.aclose()
        if isinstance(exc, UpstreamError | ShuttingDown | ClientGone):
            return await _ended_early(request, exc, trace, headers)
        log.exception("chat stream failed before its first byte")
        return await _internal_error(request, trace, headers)
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


async def _ended_early(
    request: Request, exc: Exception, trace: RequestTrace, headers: dict[str, str]
) -> Response:
    """An exchange that ended before its first byte (upstream failure, client gone, shutdown):
    its own status, streaming or not."""
    if isinstance(exc, UpstreamError):
        trace.failed(exc)
        durable = await trace.acknowledged()
        return upstream_error_response(request, exc, {**headers, **trace.response_headers(durable)})
    if isinstance(exc, ShuttingDown):
        return await _shutting_down(request, trace, headers)
    trace.canceled()
    return Response(status_code=CLIENT_CLOSED_REQUEST)  # the client is gone


async def _internal_error(
    request: Request, trace: RequestTrace, headers: dict[str, str]
) -> Response:
    """routekeeper failed (a bug): still an envelope, and the record says how it ended."""
    trace.internal_error()
    durable = await trace.acknowledged()
    return error_response(
        request,
        500,
        "internal_error",
        "internal error; see the server log",
        headers={**headers, **trace.response_headers(durable)},
    )


async def _complete(
    request: Request,
    runtime: ReplicaRuntime,
    transport: ModelTransport,
    plan: ChatPlan,
    trace: RequestTrace,
    headers: dict[str, str],
) -> Response:
    """A non-streaming exchange: the upstream's JSON answer, sent once its record is
    committed (acknowledged mode)."""
    try:
        data = await _race(request, runtime, transport.complete(plan.body))
        try:
            encoded = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        except (ValueError, RecursionError):
            raise UpstreamError(
                UpstreamErrorKind.PROTOCOL, "upstream sent an answer that cannot be relayed"
            ) from None
    except (UpstreamError, ClientGone, ShuttingDown) as exc:
        return await _ended_early(request, exc, trace, headers)
    trace.mark_first_byte()
    if trace.captures_response:
        trace.capture_response(encoded)
    usage = data.get("usage")
    trace.usage = usage if isinstance(usage, dict) else None
    trace.completed()
    durable = await trace.acknowledged()
    return Response(
        encoded.encode("utf-8"),
        media_type="application/json",
        headers={**headers, **trace.response_headers(durable)},
    )


async def _shutting_down(
    request: Request, trace: RequestTrace, headers: dict[str, str]
) -> Response:
    """The shutdown budget ends before the upstream answered: a 503 the client can retry,
    instead of the server's plain-text 500 when it cancels the request."""
    trace.shut_down()
    durable = await trace.acknowledged()
    return error_response(
        request,
        503,
        "server_shutting_down",
        "the server is shutting down; retry the request",
        headers={**headers, **trace.response_headers(durable), "retry-after": "1"},
    )


class ClientGone(Exception):
    """The client disconnected before the upstream answered."""


class ShuttingDown(Exception):
    """The shutdown budget ran out before the upstream answered."""


async def _race(request: Request, runtime: ReplicaRuntime, awaitable: Awaitable[T]) -> T:
    """Await the upstream, but cancel it (closing its connection) as soon as the client
    disconnects (an abandoned request must not hold an upstream slot until it times out), or
    when the shutdown budget is about to run out (so the client gets an answer)."""
    work = asyncio.ensure_future(awaitable)

    async def client_left() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    async def shutdown_due() -> None:
        await runtime.shutting_down.wait()
        deadline = runtime.shutdown_deadline
        if deadline is not None:
            loop = asyncio.get_running_loop()
            await asyncio.sleep(max(0.0, deadline - STREAM_SHUTDOWN_MARGIN_SECONDS - loop.time()))

    left = asyncio.ensure_future(client_left())
    due = asyncio.ensure_future(shutdown_due())
    try:
        await asyncio.wait({work, left, due}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        left.cancel()
        due.cancel()
        if not work.done():
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await work
    if work.cancelled():
        raise ClientGone if left.done() and not left.cancelled() else ShuttingDown
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
                    trace.shut_down()
                    await trace.acknowledged()
                    yield f"data: {json.dumps(error)}\n\n"
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
    except Exception:  # never a stream cut without an error event, nor a record left open
        log.exception("chat stream failed")
        trace.internal_error()
        await trace.acknowledged()
        error = openai_error_body(
            "internal error; see the server log", type_="server_error", code="internal_error"
        )
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


@router.get(
    "/models/{model_id:path}",
    operation_id="retrieve_model",
    responses={404: {"description": "No such model (code model_not_found)."}},
)
async def retrieve_model(request: Request, model_id: str) -> dict[str, Any]:
    """One configured model or auto name, as in the list."""
    if model_id not in _service(request).model_names():
        raise ModelNotFound(f"The model '{model_id}' does not exist", param="model")
    return _model_object(model_id)


def _model_object(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "routekeeper"}


@router.get("/models", operation_id="list_models")
async def list_models(request: Request) -> dict[str, Any]:
    """Configured models, then the auto names that route."""
    return {
        "object": "list",
        "data": [_model_object(name) for name in _service(request).model_names()],
    }
