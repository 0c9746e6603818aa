"""OpenAI's Conversations API: ``POST /v1/conversations``, ``GET``, ``POST`` (metadata) and
``DELETE /v1/conversations/{conversation_id}``, ``POST`` and ``GET .../items``, ``GET`` and
``DELETE .../items/{item_id}``. The route decodes and encodes; the service
(``router.services.conversations``) checks and stores. Errors use OpenAI's envelope."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from routekeeper.contract.errors import InvalidRequest
from routekeeper.contract.ids import id_pattern
from routekeeper.contract.pages import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, SortOrder
from routekeeper.http.access import Caller
from routekeeper.http.body import decode_json_body
from routekeeper.http.errors import ensure_json_safe
from routekeeper.router.services.conversations import MAX_ITEMS, ConversationsService

# A conversation's items are messages (``msg_``) and the model's function calls (``fc_``):
# a page may end on either, and its ``last_id`` is the next page's ``after``.
ITEM_ID_PATTERN = "|".join(id_pattern(prefix) for prefix in ("msg", "fc"))
ItemCursor = Annotated[str | None, Query(pattern=ITEM_ID_PATTERN, description="An item id.")]
Include = Annotated[list[str] | None, Query(alias="include[]")]

_ITEMS = {"type": "array", "maxItems": MAX_ITEMS, "items": {"type": "object"}}
_METADATA = {"type": ["object", "null"], "additionalProperties": {"type": "string"}}


def _body_schema(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    schema = {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


async def _json(request: Request) -> Any:
    body = decode_json_body(await request.body(), request.headers)
    ensure_json_safe(body)
    return body


def router(conversations: ConversationsService) -> APIRouter:
    routes = APIRouter(prefix="/v1", tags=["openai"])

    @routes.post(
        "/conversations",
        operation_id="create_conversation",
        openapi_extra=_body_schema({"items": _ITEMS, "metadata": _METADATA}, []),
    )
    async def create_conversation(request: Request, caller: Caller) -> dict[str, Any]:
        """A conversation with up to 20 first items and metadata."""
        return await conversations.create(await _json(request), tenant=caller.tenant)

    @routes.get("/conversations/{conversation_id}", operation_id="retrieve_conversation")
    async def retrieve_conversation(conversation_id: str, caller: Caller) -> dict[str, Any]:
        return await conversations.get(conversation_id, tenant=caller.tenant)

    @routes.post(
        "/conversations/{conversation_id}",
        operation_id="update_conversation",
        openapi_extra=_body_schema({"metadata": _METADATA}, ["metadata"]),
    )
    async def update_conversation(
        conversation_id: str, request: Request, caller: Caller
    ) -> dict[str, Any]:
        """Replace the conversation's metadata."""
        return await conversations.update(
            conversation_id, await _json(request), tenant=caller.tenant
        )

    @routes.delete("/conversations/{conversation_id}", operation_id="delete_conversation")
    async def delete_conversation(conversation_id: str, caller: Caller) -> dict[str, Any]:
        """Delete the conversation and its items."""
        return await conversations.delete(conversation_id, tenant=caller.tenant)

    @routes.post(
        "/conversations/{conversation_id}/items",
        operation_id="create_conversation_items",
        openapi_extra=_body_schema({"items": {**_ITEMS, "minItems": 1}}, ["items"]),
    )
    async def create_items(
        conversation_id: str, request: Request, caller: Caller, include: Include = None
    ) -> dict[str, Any]:
        """Append 1-20 items at the end of the conversation, together."""
        _no_include(include)
        return await conversations.add_items(
            conversation_id, await _json(request), tenant=caller.tenant
        )

    @routes.get("/conversations/{conversation_id}/items", operation_id="list_conversation_items")
    async def list_items(
        conversation_id: str,
        caller: Caller,
        after: ItemCursor = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
        order: SortOrder = SortOrder.DESC,
        include: Include = None,
    ) -> dict[str, Any]:
        """The conversation's items in order (newest first by default); ``after`` is the
        ``last_id`` of the page before."""
        _no_include(include)
        return await conversations.items(
            conversation_id, tenant=caller.tenant, after=after, limit=limit, order=order
        )

    @routes.get(
        "/conversations/{conversation_id}/items/{item_id}",
        operation_id="retrieve_conversation_item",
    )
    async def retrieve_item(
        conversation_id: str, item_id: str, caller: Caller, include: Include = None
    ) -> dict[str, Any]:
        _no_include(include)
        return await conversations.item(conversation_id, item_id, tenant=caller.tenant)

    @routes.delete(
        "/conversations/{conversation_id}/items/{item_id}",
        operation_id="delete_conversation_item",
    )
    async def delete_item(conversation_id: str, item_id: str, caller: Caller) -> dict[str, Any]:
        """Delete one item; answers with the conversation."""
        return await conversations.delete_item(conversation_id, item_id, tenant=caller.tenant)

    return routes


def _no_include(include: list[str] | None) -> None:
    if include:
        raise InvalidRequest(
            "include: not supported by routekeeper (no extra output data)",
            param="include",
            code="unsupported_parameter",
        )
