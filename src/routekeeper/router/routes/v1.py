"""``POST /v1/chat/completions``, ``GET /v1/models`` and ``GET /v1/models/{id}``:
OpenAI-compatible. The route decodes the request and encodes the answer; the exchange itself
(routing, the upstream call, the stream relay, the replay trace) is
``router.services.exchange``. Errors use OpenAI's envelope; errors after the first streamed
byte go in-band as ``data: {"error": {...}}``."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from routekeeper import sse
from routekeeper.contract.errors import InvalidRequest, ModelNotFound, NotReady
from routekeeper.http.access import Guard, caller, guarded
from routekeeper.http.body import decode_json_body
from routekeeper.http.errors import contract_error_response, ensure_json_safe
from routekeeper.router.services.chat_request import chat_request_schema, validate_chat_request
from routekeeper.router.services.exchange import ChatExchanges, Exchange

Endpoint = Callable[[Request], Awaitable[Response]]
CLIENT_CLOSED_REQUEST = 499  # nginx's convention; never seen by the departed client
SESSION_ID_MAX = 256  # router_replay.session_id holds this many characters


def session_id_header(request: Request) -> str | None:
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
    return session_id


def disconnect_waiter(request: Request) -> Any:
    async def wait() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    return wait


def encoded_exchange(request: Request, exchange: Exchange) -> Response:
    if exchange.error is not None:
        return contract_error_response(request, exchange.error, exchange.headers)
    if exchange.events is not None:
        return StreamingResponse(
            sse.encoded(exchange.events), media_type=sse.MEDIA_TYPE, headers=exchange.headers
        )
    if exchange.body is not None:
        return Response(exchange.body, media_type="application/json", headers=exchange.headers)
    return Response(status_code=CLIENT_CLOSED_REQUEST)  # the client is gone


def chat_completion_endpoint(exchanges: ChatExchanges, guard: Guard | None = None) -> Endpoint:
    """``POST /v1/chat/completions``. The app mounts it as a plain route ahead of every router
    (no per-request dependency resolution on the hot path), with the ``guard`` it calls
    itself; ``router()`` declares the same endpoint for /openapi.json (there the router's
    guard admits the request)."""

    async def create_chat_completion(request: Request) -> Response:
        """OpenAI's Chat Completions: routed (an auto model name) or passed through (a configured
        model). The body is checked field by field (400 naming ``param``); unknown fields pass
        through to the upstream."""
        started = time.perf_counter()
        if not exchanges.accepting:
            # Before the replica is ready its records could not be stored (the writer starts
            # with readiness): refuse rather than acknowledge what may be lost.
            raise NotReady(
                f"routekeeper is not ready yet (phase: {exchanges.phase}); retry shortly"
            )
        principal = await guard.admit(request) if guard is not None else caller(request)
        session_id = session_id_header(request)
        payload = validate_chat_request(decode_json_body(await request.body(), request.headers))
        ensure_json_safe(payload)
        exchange = await exchanges.run(
            payload,
            request.headers,
            session_id=session_id,
            started=started,
            disconnected=disconnect_waiter(request),
            principal=principal,
        )
        return encoded_exchange(request, exchange)

    if guard is not None:
        guarded(create_chat_completion, guard)
    return create_chat_completion


def router(exchanges: ChatExchanges) -> APIRouter:
    """The OpenAI-compatible routes over ``exchanges`` (and its chat service)."""
    routes = APIRouter(prefix="/v1", tags=["openai"])
    chat = exchanges.chat
    routes.add_api_route(
        "/chat/completions",
        chat_completion_endpoint(exchanges),
        methods=["POST"],
        operation_id="create_chat_completion",
        response_model=None,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": chat_request_schema()}},
            }
        },
    )

    @routes.get(
        "/models/{model_id:path}",
        operation_id="retrieve_model",
        responses={404: {"description": "No such model (code model_not_found)."}},
    )
    async def retrieve_model(model_id: str) -> dict[str, Any]:
        """One configured model or auto name, as in the list."""
        if model_id not in chat.model_names():
            raise ModelNotFound(f"The model '{model_id}' does not exist")
        return _model_object(model_id)

    @routes.get("/models", operation_id="list_models")
    async def list_models() -> dict[str, Any]:
        """Configured models, then the auto names that route."""
        return {"object": "list", "data": [_model_object(name) for name in chat.model_names()]}

    return routes


def _model_object(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "routekeeper"}
