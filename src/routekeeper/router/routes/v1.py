"""``POST /v1/chat/completions`` and ``GET /v1/models``: OpenAI-compatible, thin over
``router.services.chat``. Errors use OpenAI's envelope; errors after the first streamed byte
go in-band as ``data: {"error": {...}}``."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from routekeeper.http.errors import error_response, openai_error_body
from routekeeper.router.services.chat import ChatPlan, ChatService
from routekeeper.router.services.metrics import RouterMetrics
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
    service, metrics = _service(request), _metrics(request)
    plan = await service.plan(body.model_dump(exclude_unset=True), request.headers)
    headers = _routing_headers(plan)
    decision = plan.decision.name if plan.decision else None
    transport = service.transport(plan)
    if not plan.stream:
        try:
            data = await transport.complete(plan.body)
        except UpstreamError as exc:
            metrics.upstream_failed(exc.kind.value, exc.status)
            metrics.observe(
                decision, plan.model.name, "upstream_error", time.perf_counter() - started
            )
            return upstream_error_response(request, exc, headers)
        metrics.observe(decision, plan.model.name, "completed", time.perf_counter() - started)
        return JSONResponse(data, headers=headers)

    stack = AsyncExitStack()
    try:
        chunks = await stack.enter_async_context(transport.stream(plan.body))
    except UpstreamError as exc:
        await stack.aclose()
        metrics.upstream_failed(exc.kind.value, exc.status)
        metrics.observe(decision, plan.model.name, "upstream_error", time.perf_counter() - started)
        return upstream_error_response(request, exc, headers)

    def done(outcome: str) -> None:
        metrics.observe(decision, plan.model.name, outcome, time.perf_counter() - started)

    return StreamingResponse(
        _sse(chunks, plan, stack, done, metrics),
        media_type="text/event-stream",
        headers={**headers, "cache-control": "no-cache", "x-accel-buffering": "no"},
    )


async def _sse(
    chunks: AsyncIterator[str],
    plan: ChatPlan,
    stack: AsyncExitStack,
    done: Callable[[str], None],
    metrics: RouterMetrics,
) -> AsyncIterator[str]:
    """Relay the upstream's chunks one by one. Usage was always requested upstream; it is
    dropped here unless the client asked for it. The upstream connection is closed when this
    generator ends, including when the client disconnects (Starlette cancels it)."""
    outcome = "client_canceled"
    try:
        async for payload in chunks:
            relayed = payload if plan.client_wants_usage else _without_usage(payload)
            if relayed is not None:
                yield f"data: {relayed}\n\n"
        yield "data: [DONE]\n\n"
        outcome = "completed"
    except UpstreamError as exc:
        metrics.upstream_failed(exc.kind.value, exc.status)
        outcome = "upstream_error"
        error = openai_error_body(exc.message, type_="server_error", code=f"upstream_{exc.kind}")
        yield f"data: {json.dumps(error)}\n\n"
    except asyncio.CancelledError:
        outcome = "client_canceled"
        raise
    finally:
        await stack.aclose()
        done(outcome)


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
