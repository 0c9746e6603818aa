"""``POST /v1/chat/completions`` and ``GET /v1/models``: OpenAI-compatible, thin over
``router.services.chat``. Errors use OpenAI's envelope; errors after the first streamed byte
go in-band as ``data: {"error": {...}}``."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from routekeeper.http.errors import error_response, openai_error_body
from routekeeper.router.services.chat import ChatPlan, ChatService
from routekeeper.router.services.metrics import RouterMetrics
from routekeeper.router.services.trace import RequestTrace
from routekeeper.upstream.errors import UpstreamError, UpstreamErrorKind

router = APIRouter(prefix="/v1", tags=["openai"])


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
    if exc.kind is UpstreamErrorKind.HTTP and exc.status is not None:
        status, message = exc.status, exc.upstream_message()
        code = "upstream_error"
        if status in (401, 403):
            status, code = 502, "upstream_auth_failed"
            message = f"the upstream refused routekeeper's credentials ({exc.status}): {message}"
        elif status == 429:
            code = "rate_limited"
            if exc.retry_after:
                extra["retry-after"] = exc.retry_after
        elif status < 400 or status > 599:
            status = 502
    elif exc.kind is UpstreamErrorKind.TIMEOUT:
        status, code, message = 504, "upstream_timeout", exc.message
    elif exc.kind is UpstreamErrorKind.CONNECT:
        status, code, message = 502, "upstream_unreachable", exc.message
    else:
        status, code, message = 502, "upstream_protocol_error", exc.message
    return error_response(request, status, code, message, headers=extra)


@router.post("/chat/completions", operation_id="create_chat_completion", response_model=None)
async def create_chat_completion(request: Request, body: ChatCompletionRequest) -> Response:
    started = time.perf_counter()
    service = _service(request)
    plan = await service.plan(body.model_dump(exclude_unset=True), request.headers)
    trace = RequestTrace(
        plan,
        recorder=request.app.state.recorder,
        metrics=_metrics(request),
        replica_id=request.app.state.runtime.id,
        requested_model=body.model,
        session_id=request.headers.get("x-session-id"),
        started=started,
    )
    headers = {**_routing_headers(plan), "x-routekeeper-replay-id": trace.replay_id}
    transport = service.transport(plan)
    if not plan.stream:
        try:
            data = await transport.complete(plan.body)
        except UpstreamError as exc:
            trace.failed(exc)
            return upstream_error_response(request, exc, headers)
        except asyncio.CancelledError:
            trace.canceled()
            raise
        trace.mark_first_byte()
        usage = data.get("usage")
        trace.usage = usage if isinstance(usage, dict) else None
        trace.completed()
        return JSONResponse(data, headers=headers)

    stack = AsyncExitStack()
    try:
        chunks = await stack.enter_async_context(transport.stream(plan.body))
    except UpstreamError as exc:
        await stack.aclose()
        trace.failed(exc)
        return upstream_error_response(request, exc, headers)
    except asyncio.CancelledError:
        await stack.aclose()
        trace.canceled()
        raise
    return StreamingResponse(
        _sse(chunks, plan, stack, trace),
        media_type="text/event-stream",
        headers={**headers, "cache-control": "no-cache", "x-accel-buffering": "no"},
    )


async def _sse(
    chunks: AsyncIterator[str], plan: ChatPlan, stack: AsyncExitStack, trace: RequestTrace
) -> AsyncIterator[str]:
    """Relay the upstream's chunks one by one. Usage was always requested upstream; it is
    recorded, and dropped here unless the client asked for it. The upstream connection is
    closed when this generator ends, including when the client disconnects (Starlette
    cancels it)."""
    try:
        async for payload in chunks:
            trace.mark_first_byte()
            if '"usage"' in payload:
                _note_usage(payload, trace)
            relayed = payload if plan.client_wants_usage else _without_usage(payload)
            if relayed is not None:
                yield f"data: {relayed}\n\n"
        yield "data: [DONE]\n\n"
        trace.completed()
    except UpstreamError as exc:
        trace.failed(exc)
        error = openai_error_body(exc.message, type_="server_error", code=f"upstream_{exc.kind}")
        yield f"data: {json.dumps(error)}\n\n"
    finally:
        # Reached without an outcome only when the client went away (cancellation).
        trace.canceled()
        await stack.aclose()


def _without_usage(payload: str) -> str | None:
    try:
        data = json.loads(payload)
    except ValueError:
        raise UpstreamError(
            UpstreamErrorKind.PROTOCOL, "upstream sent a chunk that is not JSON"
        ) from None
    if not isinstance(data, dict):
        return payload
    if data.get("choices") == [] and data.get("usage") is not None:
        return None
    if "usage" in data:
        data.pop("usage")
        return json.dumps(data, separators=(",", ":"))
    return payload


def _note_usage(payload: str, trace: RequestTrace) -> None:
    try:
        data = json.loads(payload)
    except ValueError:
        return
    if isinstance(data, dict) and isinstance(data.get("usage"), dict):
        trace.usage = data["usage"]


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
