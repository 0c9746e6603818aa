"""The Conversations service (OpenAI's Conversations API): create, retrieve, update and delete
conversations, add, list, retrieve and delete their items, and what a turn of
``POST /v1/responses`` with ``conversation`` needs (:func:`turn_conversation`,
:meth:`ConversationsService.history`). Items are checked by the Responses input parser, so a
conversation accepts exactly the items a response's input does. Every conversation belongs to
the tenant of the key that created it (``default`` with auth off), and every call names the
tenant it acts for; conversations are kept until deleted."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from routekeeper.contract.conversations import ConversationItemRecord, ConversationRecord
from routekeeper.contract.errors import InvalidRequest
from routekeeper.contract.ids import has_prefix, new_id
from routekeeper.contract.pages import SortOrder
from routekeeper.contract.strict_json import json_kind
from routekeeper.router.services.responses_request import input_items, metadata_of
from routekeeper.storage.conversations_store import ConversationsStore, conversation_not_found
from routekeeper.storage.state import StateStorage
from routekeeper.storage.types import utcnow

MAX_ITEMS = 20
"""Items one create or add request may carry (OpenAI's limit)."""


def _fail(param: str, message: str) -> InvalidRequest:
    return InvalidRequest(f"{param}: {message}", param=param)


def _body(body: Any, allowed: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidRequest(f"the request body must be a JSON object, got {json_kind(body)}")
    for name in body:
        if name not in allowed:
            raise _fail(name, "unknown parameter")
    return body


def _items(value: Any, *, required: bool) -> list[dict[str, Any]]:
    """Checked items with new ids (sorted, so ids grow with position within one request)."""
    if value is None or value == []:
        if required:
            raise _fail("items", "must be a non-empty array")
        return []
    if not isinstance(value, list):
        raise _fail("items", f"must be an array, got {json_kind(value)}")
    if len(value) > MAX_ITEMS:
        raise _fail("items", f"must have at most {MAX_ITEMS} items, got {len(value)}")
    items = input_items(value, "items")
    ids = sorted(new_id("msg") for _ in items)
    return [{"id": item_id, **item} for item_id, item in zip(ids, items, strict=True)]


def turn_conversation(body: Mapping[str, Any]) -> str | None:
    """The ``conversation`` of a create-response body that ``parse_request`` accepted: its id
    (``"conv_..."`` or ``{"id": "conv_..."}``), or None. A 400 when it comes with
    ``previous_response_id`` (OpenAI: one or the other) or with ``store: false`` (a turn on a
    conversation is stored: it is appended to it)."""
    value = body.get("conversation")
    if value is None:
        return None
    if isinstance(value, dict):
        for key in value:
            if key != "id":
                raise _fail(f"conversation.{key}", "unknown parameter")
        found = value.get("id")
        if not isinstance(found, str):
            raise _fail("conversation.id", f"must be a string, got {json_kind(found)}")
    elif isinstance(value, str):
        found = value
    else:
        raise _fail("conversation", f"must be a string or an object, got {json_kind(value)}")
    if body.get("previous_response_id") is not None:
        raise _fail("conversation", "cannot be used together with previous_response_id")
    if body.get("store") is False:
        raise _fail("conversation", "cannot be used with store: false (the turn is appended)")
    return found


def _seconds(at: datetime) -> int:
    return int(at.timestamp())


def conversation_object(record: ConversationRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "object": "conversation",
        "created_at": _seconds(record.created_at),
        "metadata": record.metadata,
    }


def _list(items: list[ConversationItemRecord], *, has_more: bool = False) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [i.data for i in items],
        "first_id": items[0].id if items else None,
        "last_id": items[-1].id if items else None,
        "has_more": has_more,
    }


class ConversationsService:
    def __init__(self, storage: StateStorage) -> None:
        self.store = storage.store(ConversationsStore)

    def _check(self, conversation_id: str) -> None:
        if not has_prefix(conversation_id, "conv"):
            raise conversation_not_found(conversation_id)

    async def create(self, body: Any, *, tenant: str) -> dict[str, Any]:
        """A new conversation with its first items (at most 20) and metadata, committed
        before it is answered."""
        body = _body(body, ("items", "metadata"))
        metadata = metadata_of(body.get("metadata"))
        items = _items(body.get("items"), required=False)
        record = ConversationRecord(
            id=new_id("conv"), created_at=utcnow(), metadata=metadata, tenant_id=tenant
        )
        record, _ = await self.store.create(record, items)
        return conversation_object(record)

    async def get(self, conversation_id: str, *, tenant: str) -> dict[str, Any]:
        self._check(conversation_id)
        return conversation_object(await self.store.get(conversation_id, tenant_id=tenant))

    async def update(self, conversation_id: str, body: Any, *, tenant: str) -> dict[str, Any]:
        """Replace the metadata (``metadata`` is required; null clears it)."""
        body = _body(body, ("metadata",))
        if "metadata" not in body:
            raise _fail("metadata", "is required")
        metadata = metadata_of(body["metadata"])
        self._check(conversation_id)
        record = await self.store.update_metadata(conversation_id, metadata, tenant_id=tenant)
        return conversation_object(record)

    async def delete(self, conversation_id: str, *, tenant: str) -> dict[str, Any]:
        """Delete the conversation and its items (the responses of its turns stay)."""
        self._check(conversation_id)
        await self.store.delete(conversation_id, tenant_id=tenant)
        return {"id": conversation_id, "object": "conversation.deleted", "deleted": True}

    async def add_items(self, conversation_id: str, body: Any, *, tenant: str) -> dict[str, Any]:
        """Append 1-20 items together at the end; the list of the new items."""
        body = _body(body, ("items",))
        items = _items(body.get("items"), required=True)
        self._check(conversation_id)
        return _list(await self.store.add_items(conversation_id, items, tenant_id=tenant))

    async def items(
        self,
        conversation_id: str,
        *,
        tenant: str,
        after: str | None,
        limit: int,
        order: SortOrder,
    ) -> dict[str, Any]:
        """One page of the conversation's items in position order (``after``: an item id)."""
        self._check(conversation_id)
        page = await self.store.items(
            conversation_id, tenant_id=tenant, limit=limit, order=order, after=after
        )
        return _list(list(page.data), has_more=page.has_more)

    async def item(self, conversation_id: str, item_id: str, *, tenant: str) -> dict[str, Any]:
        self._check(conversation_id)
        found = await self.store.item(conversation_id, item_id, tenant_id=tenant)
        return found.data

    async def delete_item(
        self, conversation_id: str, item_id: str, *, tenant: str
    ) -> dict[str, Any]:
        """Delete one item; answers with the conversation (OpenAI's shape)."""
        self._check(conversation_id)
        record = await self.store.delete_item(conversation_id, item_id, tenant_id=tenant)
        return conversation_object(record)

    async def history(self, conversation_id: str, *, tenant: str) -> list[dict[str, Any]]:
        """A turn's context: the conversation's items as committed now, in order (NotFound,
        ``param: conversation``, when there is no such conversation)."""
        self._check(conversation_id)
        return [i.data for i in await self.store.history(conversation_id, tenant_id=tenant)]
