"""OpenAI's Responses API: ``POST /v1/responses``, ``GET`` and ``DELETE
/v1/responses/{response_id}``, ``GET /v1/responses/{response_id}/input_items``. The route
decodes and encodes; the service (``router.services.responses``) stores and chains responses
and runs each one through the chat exchange. Errors use OpenAI's envelope."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from routekeeper.contract.errors import InvalidRequest, NotReady
from routekeeper.contract.ids import id_pattern
from routekeeper.contract.pages import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, SortOrder
from routekeeper.http.access import Caller, Guard, caller, guarded
from routekeeper.http.body import decode_json_body
from routekeeper.http.errors import ensure_json_safe
from routekeeper.router.routes.v1 import (
    Endpoint,
    disconnect_waiter,
    encoded_exchange,
    session_id_header,
)
from routekeeper.router.services.responses import ResponsesService
from routekeeper.router.services.responses_request import responses_request_schema

ItemCursor = Annotated[
    str | None, Query(pattern=id_pattern("msg"), description="An input item id.")
]


def create_response_endpoint(responses: ResponsesService, guard: Guard | None = None) -> Endpoint:
    """``POST /v1/responses``. Like chat completions, the app mounts it as a plain route ahead
    of every router (no per-request dependency resolution) with its ``guard``; ``router()``
    declares the same endpoint for /openapi.json."""

    async def create_response(request: Request) -> Response:
        """Create a model response: routed like a chat completion, stored (``store``, default
        true) and chained (``previous_response_id``); ``stream`` sends the Responses events.
        A field routekeeper cannot honour is a 400 naming it."""
        started = time.perf_counter()
        if not responses.accepting:
            raise NotReady(
                f"routekeeper is not ready yet (phase: {responses.phase}); retry shortly"
            )
        principal = await guard.admit(request) if guard is not None else caller(request)
        session_id = session_id_header(request)
        body = decode_json_body(await request.body(), request.headers)
        ensure_json_safe(body)
        exchange = await responses.create(
            body,
            request.headers,
            session_id=session_id,
            started=started,
            disconnected=disconnect_waiter(request),
            principal=principal,
        )
        return encoded_exchange(request, exchange)

    if guard is not None:
        guarded(create_response, guard)
    return create_response


def router(responses: ResponsesService) -> APIRouter:
    routes = APIRouter(prefix="/v1", tags=["openai"])
    routes.add_api_route(
        "/responses",
        create_response_endpoint(responses),
        methods=["POST"],
        operation_id="create_response",
        response_model=None,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": responses_request_schema()}},
            }
        },
    )

    @routes.get("/responses/{response_id}", operation_id="retrieve_response")
    async def retrieve_response(
        response_id: str,
        caller: Caller,
        stream: Annotated[bool | None, Query()] = None,
        include: Annotated[list[str] | None, Query(alias="include[]")] = None,
    ) -> dict[str, Any]:
        """A stored response (404 when unknown, deleted, expired or never stored)."""
        _no_extras(stream, include)
        return await responses.get(response_id, tenant=caller.tenant)

    @routes.delete("/responses/{response_id}", operation_id="delete_response")
    async def delete_response(response_id: str, caller: Caller) -> dict[str, Any]:
        """Delete a stored response and its items."""
        return await responses.delete(response_id, tenant=caller.tenant)

    @routes.get("/responses/{response_id}/input_items", operation_id="list_input_items")
    async def list_input_items(
        response_id: str,
        caller: Caller,
        after: ItemCursor = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
        order: SortOrder = SortOrder.DESC,
        include: Annotated[list[str] | None, Query(alias="include[]")] = None,
    ) -> dict[str, Any]:
        """The response's input items, newest first by default; ``after`` is an item id."""
        _no_extras(None, include)
        return await responses.input_items(
            response_id, tenant=caller.tenant, after=after, limit=limit, order=order
        )

    return routes


def _no_extras(stream: bool | None, include: list[str] | None) -> None:
    if stream:
        raise InvalidRequest(
            "stream: not supported by routekeeper (no background responses to resume)",
            param="stream",
            code="unsupported_parameter",
        )
    if include:
        raise InvalidRequest(
            "include: not supported by routekeeper (no extra output data)",
            param="include",
            code="unsupported_parameter",
        )
