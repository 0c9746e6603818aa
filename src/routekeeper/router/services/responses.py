"""The Responses service: create (the chain's context, then the chat exchange with a
:class:`ResponseRelay`), retrieve, delete and list a response's input items. Stored responses
older than ``responses.retention_days`` are gone at once (a 404), before retention deletes
them. Every response belongs to the tenant of the key that created it, and is found only
with a key of that tenant (``default`` with auth off)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from routekeeper.contract.auth import ANONYMOUS, Principal
from routekeeper.contract.errors import NotFound
from routekeeper.contract.ids import has_prefix, new_id
from routekeeper.contract.pages import SortOrder
from routekeeper.contract.responses import (
    ItemKind,
    ResponseItemRecord,
    ResponseRecord,
    ResponseStatus,
)
from routekeeper.router.services.conversations import ConversationsService, turn_conversation
from routekeeper.router.services.exchange import ChatExchanges, Exchange
from routekeeper.router.services.responses_chat import chat_messages
from routekeeper.router.services.responses_relay import ResponseRelay, response_object
from routekeeper.router.services.responses_request import parse_request
from routekeeper.router.services.responses_tools import called_ids, check_call_ids
from routekeeper.storage.responses_store import ResponsesStore
from routekeeper.storage.state import StateStorage
from routekeeper.storage.types import utcnow

ENDPOINT = "/v1/responses"


def _previous_not_found(response_id: str) -> NotFound:
    error = NotFound(f"Previous response with id '{response_id}' not found.")
    error.param = "previous_response_id"
    return error


def _chat_messages(items: Sequence[ResponseItemRecord]) -> list[dict[str, Any]]:
    """A turn's items as chat messages. The store keeps them with a remembered turn, so the
    same message objects go into every later turn's payload: nothing may change them."""
    return chat_messages([item.data for item in items])


class ResponsesService:
    def __init__(
        self, storage: StateStorage, exchanges: ChatExchanges, *, retention_days: int
    ) -> None:
        self.store = storage.store(ResponsesStore)
        self.conversations = ConversationsService(storage)
        self.exchanges = exchanges
        self.retention = timedelta(days=retention_days)

    @property
    def accepting(self) -> bool:
        return self.exchanges.accepting

    @property
    def phase(self) -> str:
        return self.exchanges.phase

    def _not_before(self) -> datetime:
        """Responses created before this have expired."""
        return utcnow() - self.retention

    async def create(
        self,
        body: Any,
        headers: Mapping[str, str],
        *,
        session_id: str | None,
        started: float,
        disconnected: Callable[[], Awaitable[None]],
        principal: Principal = ANONYMOUS,
    ) -> Exchange:
        """Check the request, build the turn's context (this turn's instructions, every
        earlier turn's input and output in order, then the new input) and run it through the
        chat exchange. With ``conversation``, the conversation's items as committed now take
        the place of the chain, and the finished turn is appended to it. Raises
        InvalidRequest (400), NotFound (an unknown, deleted, expired or unstored previous
        response, or one its chain reaches; an unknown or deleted conversation: 404)."""
        request = parse_request(body)
        tenant = principal.tenant
        conversation = turn_conversation(body)
        messages: list[dict[str, Any]] = []
        if request.instructions is not None:
            messages.append({"role": "system", "content": request.instructions})
        previous = request.previous_response_id
        earlier: list[dict[str, Any]] = []  # the context's chat messages
        if conversation is not None:
            earlier = chat_messages(await self.conversations.history(conversation, tenant=tenant))
        if previous is not None:
            if not has_prefix(previous, "resp"):
                raise _previous_not_found(previous)
            try:
                earlier = await self.store.context(
                    previous,
                    tenant_id=tenant,
                    not_before=self._not_before(),
                    convert=_chat_messages,
                )
            except NotFound as exc:
                exc.param = "previous_response_id"
                raise
        response_id = new_id("resp")
        # Sorted, so ids grow with position: the input_items cursor is an item id.
        ids = sorted(new_id("msg") for _ in request.items)
        inputs = [
            ResponseItemRecord(
                id=item_id,
                response_id=response_id,
                position=position,
                kind=ItemKind.INPUT,
                data={"id": item_id, **item},
                tenant_id=tenant,
            )
            for position, (item_id, item) in enumerate(zip(ids, request.items, strict=True))
        ]
        check_call_ids(called_ids(earlier), request.items)
        messages += earlier
        messages += chat_messages(request.items)
        payload: dict[str, Any] = {"model": request.model, "messages": messages}
        payload.update(request.upstream)
        if request.stream:
            payload["stream"] = True
        record = ResponseRecord(
            id=response_id,
            replica_id=self.exchanges.replica.id,
            status=ResponseStatus.IN_PROGRESS,
            model=request.model,
            created_at=utcnow(),
            request={**request.echo, "instructions": request.instructions},
            tenant_id=tenant,
            previous_response_id=previous,
            conversation_id=conversation,
        )
        relay = ResponseRelay(self.store if request.store else None, record, inputs)
        return await self.exchanges.run(
            payload,
            headers,
            session_id=session_id,
            started=started,
            disconnected=disconnected,
            relay=relay,
            endpoint=ENDPOINT,
            response_id=response_id,
            principal=principal,
        )

    def _check_id(self, response_id: str) -> None:
        if not has_prefix(response_id, "resp"):
            raise NotFound(f"No response found with id '{response_id}'.")

    async def get(self, response_id: str, *, tenant: str) -> dict[str, Any]:
        self._check_id(response_id)
        record, items = await self.store.get(
            response_id, tenant_id=tenant, not_before=self._not_before()
        )
        return response_object(record, [i.data for i in items if i.kind is ItemKind.OUTPUT])

    async def delete(self, response_id: str, *, tenant: str) -> dict[str, Any]:
        self._check_id(response_id)
        await self.store.delete(response_id, tenant_id=tenant, not_before=self._not_before())
        return {"id": response_id, "object": "response.deleted", "deleted": True}

    async def input_items(
        self,
        response_id: str,
        *,
        tenant: str,
        after: str | None,
        limit: int,
        order: SortOrder,
    ) -> dict[str, Any]:
        """One page of the response's own input items (not those of the responses it
        continues), OpenAI's list shape."""
        self._check_id(response_id)
        page = await self.store.input_items(
            response_id,
            tenant_id=tenant,
            not_before=self._not_before(),
            limit=limit,
            order=order,
            after=after,
        )
        return {
            "object": "list",
            "data": [item.data for item in page.data],
            "first_id": page.first_id,
            "last_id": page.last_id,
            "has_more": page.has_more,
        }
