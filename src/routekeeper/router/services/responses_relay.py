"""One response through the chat exchange: the :class:`~routekeeper.router.services.exchange.
Relay` of ``POST /v1/responses``. It stores the response ``in_progress`` before the upstream is
called, turns the upstream's chat answer or chunks into the response object or the Responses
event sequence, and finishes the stored response (completed, incomplete, failed, cancelled)
before the terminal event or the body goes out."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime
from typing import Any

from routekeeper import sse
from routekeeper.contract.errors import (
    InvalidTransition,
    NotFound,
    RoutekeeperError,
    StorageError,
)
from routekeeper.contract.ids import new_id
from routekeeper.contract.responses import (
    ItemKind,
    ResponseItemRecord,
    ResponseRecord,
    ResponseStatus,
)
from routekeeper.router.services.chat import ChatPlan
from routekeeper.router.services.responses_calls import (
    StreamedCalls,
    answered_calls,
    unicode_text,
)
from routekeeper.router.services.trace import RequestTrace, token_count
from routekeeper.storage.records import updated
from routekeeper.storage.responses_store import ResponsesStore
from routekeeper.storage.types import utcnow

log = logging.getLogger(__name__)

# Response error codes OpenAI's schema allows; everything else is a server_error.
ERROR_CODES = ("rate_limit_exceeded",)
INCOMPLETE_REASONS = {"length": "max_output_tokens", "content_filter": "content_filter"}
APPENDED_TO_CONVERSATION = (ResponseStatus.COMPLETED, ResponseStatus.INCOMPLETE)
"""The outcomes whose turn is appended to its conversation: a turn the client received in
full (or cut by a limit). A failed or cancelled turn stays in its stored response only, so a
conversation never holds an answer that broke off."""


def _seconds(at: datetime | None) -> int | None:
    return None if at is None else int(at.timestamp())


def response_object(record: ResponseRecord, output: list[dict[str, Any]]) -> dict[str, Any]:
    """The response as OpenAI's ``Response``: the create fields echoed as they were sent."""
    echo = record.request
    return {
        "id": record.id,
        "object": "response",
        "created_at": _seconds(record.created_at),
        "completed_at": _seconds(record.completed_at),
        "status": record.status.value,
        "error": record.error,
        "incomplete_details": record.incomplete_details,
        "instructions": echo.get("instructions"),
        "model": record.model,
        "output": output,
        "parallel_tool_calls": echo.get("parallel_tool_calls", True),
        "previous_response_id": record.previous_response_id,
        "conversation": None if record.conversation_id is None else {"id": record.conversation_id},
        "background": False,
        "metadata": echo.get("metadata", {}),
        "max_output_tokens": echo.get("max_output_tokens"),
        "max_tool_calls": echo.get("max_tool_calls"),
        "temperature": echo.get("temperature"),
        "top_p": echo.get("top_p"),
        "top_logprobs": None,
        "tool_choice": echo.get("tool_choice", "auto"),
        "tools": echo.get("tools", []),
        "text": echo.get("text", {"format": {"type": "text"}}),
        "reasoning": echo.get("reasoning", {"effort": None, "summary": None}),
        "truncation": echo.get("truncation", "disabled"),
        "service_tier": echo.get("service_tier"),
        "prompt": None,
        "prompt_cache_key": echo.get("prompt_cache_key"),
        "prompt_cache_retention": echo.get("prompt_cache_retention"),
        "safety_identifier": echo.get("safety_identifier"),
        "user": echo.get("user"),
        "store": echo.get("store", True),
        "usage": record.usage,
    }


def responses_usage(usage: dict[str, Any] | None) -> dict[str, Any] | None:
    """Chat usage in the Responses form (None when the upstream reported none)."""
    if not usage:
        return None
    prompt = token_count(usage.get("prompt_tokens")) or 0
    completion = token_count(usage.get("completion_tokens")) or 0
    total = token_count(usage.get("total_tokens"))
    prompt_details = usage.get("prompt_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or {}
    return {
        "input_tokens": prompt,
        "input_tokens_details": {
            "cached_tokens": token_count(prompt_details.get("cached_tokens")) or 0,
            "cache_write_tokens": 0,
        },
        "output_tokens": completion,
        "output_tokens_details": {
            "reasoning_tokens": token_count(completion_details.get("reasoning_tokens")) or 0
        },
        "total_tokens": total if total is not None else prompt + completion,
    }


def _error(message: str, code: str) -> dict[str, Any]:
    return {
        "code": code if code in ERROR_CODES else "server_error",
        "message": unicode_text(message),
    }


class ResponseRelay:
    """Stores and shapes one response (``store`` None: ``store: false``, nothing stored)."""

    def __init__(
        self,
        store: ResponsesStore | None,
        record: ResponseRecord,
        inputs: list[ResponseItemRecord],
    ) -> None:
        self.store = store
        self.record = record
        self.inputs = inputs
        self.message_id = new_id("msg")
        self.text: list[str] = []
        # Output items by output index: the message (when there is text, or nothing else)
        # and the model's function calls; a stream places each when its first delta comes.
        self.message_index: int | None = None
        self.streamed = StreamedCalls()
        self.calls = self.streamed.calls
        self.next_output = 0
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self.sequence = 0
        self.done = False
        self._start: asyncio.Future[None] | None = None

    # -- storage ---------------------------------------------------------------------------

    async def started(self, plan: ChatPlan, trace: RequestTrace) -> None:
        """Store the response ``in_progress`` with its input items. A stream waits for the
        commit (``response.created`` tells the client its id); a plain request's start is
        deferred and runs beside the upstream call (the id is told at the end, after the
        finish's commit, which the store orders after the start, or merges with it while it
        is still waiting or queued)."""
        replay_id = trace.replay_id if trace.recorder.enabled else None
        self.record = updated(self.record, selected_model=plan.model.name, replay_id=replay_id)
        if self.store is None:
            return
        self._start = self.store.start_soon(self.record, self.inputs, deferred=not plan.stream)
        # Its error is read where it matters (the finish); never reported as unretrieved.
        self._start.add_done_callback(lambda f: f.cancelled() or f.exception())
        if plan.stream:
            await asyncio.shield(self._start)

    async def _started(self) -> None:
        """The ``in_progress`` commit, awaited (its error, e.g. storage unavailable)."""
        if self._start is not None:
            await asyncio.shield(self._start)

    def _message(self, status: str) -> dict[str, Any]:
        text = "".join(self.text)
        return {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "status": status,
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
        }

    def _output(self, status: str) -> list[dict[str, Any]]:
        placed = [(call.output_index, call.item(status)) for call in self.calls]
        if self.message_index is not None:
            placed.append((self.message_index, self._message(status)))
        return [item for _, item in sorted(placed, key=lambda p: p[0])]

    async def _finish(
        self,
        status: ResponseStatus,
        *,
        error: dict[str, Any] | None = None,
        with_output: bool = True,
    ) -> list[dict[str, Any]]:
        """Commit the outcome (stored responses); returns the output. Raises StorageError
        when the commit fails (the caller answers with it); a response deleted meanwhile or
        already finished (by recovery) is logged and answered as stored."""
        self.done = True
        incomplete = None
        if status is ResponseStatus.INCOMPLETE:
            incomplete = {"reason": INCOMPLETE_REASONS.get(self.finish_reason or "")}
        message_status = "completed" if status is ResponseStatus.COMPLETED else "incomplete"
        output = self._output(message_status) if with_output else []
        self.record = updated(
            self.record,
            status=status,
            usage=responses_usage(self.usage),
            error=error,
            incomplete_details=incomplete,
            completed_at=utcnow(),
        )
        if self.store is None:
            return output
        items = [
            ResponseItemRecord(
                id=item["id"],
                response_id=self.record.id,
                position=len(self.inputs) + i,
                kind=ItemKind.OUTPUT,
                data=item,
                tenant_id=self.record.tenant_id,
            )
            for i, item in enumerate(output)
        ]
        try:
            await self.store.finish(
                self.record.id,
                status,
                items,
                usage=self.record.usage,
                error=error,
                incomplete_details=incomplete,
                completed_at=self.record.completed_at,
                # A conversation holds finished turns only: completed and incomplete ones.
                conversation_id=(
                    self.record.conversation_id if status in APPENDED_TO_CONVERSATION else None
                ),
            )
        except NotFound:
            await self._started()  # never stored: its own error (storage unavailable)
            log.info("response %s was deleted before it finished", self.record.id)
        except InvalidTransition as exc:
            # Recovery finished it (this replica was taken for dead meanwhile): the client is
            # told what is stored, never an outcome that was not committed.
            log.warning("response %s was finished already: %s", self.record.id, exc)
            self.record, items = await self.store.get(
                self.record.id, tenant_id=self.record.tenant_id, not_before=self.record.created_at
            )
            return [i.data for i in items if i.kind is ItemKind.OUTPUT]
        return output

    def _status_of_answer(self) -> ResponseStatus:
        if self.finish_reason in INCOMPLETE_REASONS:
            return ResponseStatus.INCOMPLETE
        return ResponseStatus.COMPLETED

    # -- non-streaming ---------------------------------------------------------------------

    async def answer(self, data: dict[str, Any], encoded: str) -> bytes:
        choices = data.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices else {}
        message = choice.get("message") if isinstance(choice, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        self.text = [unicode_text(content)] if isinstance(content, str) else []
        self.calls[:] = answered_calls(message, 1 if "".join(self.text) else 0)
        if "".join(self.text) or not self.calls:
            self.message_index = 0
        reason = choice.get("finish_reason") if isinstance(choice, dict) else None
        self.finish_reason = reason if isinstance(reason, str) else None
        usage = data.get("usage")
        self.usage = usage if isinstance(usage, dict) else None
        output = await self._finish(self._status_of_answer())
        return _dumps(response_object(self.record, output)).encode()

    async def ended_early(self, error: RoutekeeperError | None) -> None:
        try:
            if error is None:
                await self._finish(ResponseStatus.CANCELLED, with_output=False)
            else:
                await self._finish(
                    ResponseStatus.FAILED,
                    error=_error(error.message, error.code),
                    with_output=False,
                )
        except StorageError:
            log.exception("response %s: its outcome could not be stored", self.record.id)

    # -- streaming -------------------------------------------------------------------------

    def _event(self, kind: str, **fields: Any) -> sse.Data:
        body = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return sse.Data(_dumps(body), event=kind)

    def _part(self) -> dict[str, Any]:
        return {
            "type": "output_text",
            "text": "".join(self.text),
            "annotations": [],
            "logprobs": [],
        }

    def opened(self) -> list[sse.Data]:
        snapshot = response_object(self.record, [])
        return [
            self._event("response.created", response=snapshot),
            self._event("response.in_progress", response=snapshot),
        ]

    def _place_message(self) -> None:
        self.message_index = self.next_output
        self.next_output += 1

    def _message_added(self) -> list[sse.Data]:
        where = {"item_id": self.message_id, "output_index": self.message_index}
        item = {**self._message("in_progress"), "content": []}
        return [
            self._event("response.output_item.added", output_index=self.message_index, item=item),
            self._event("response.content_part.added", part=self._part(), content_index=0, **where),
        ]

    def _call_events(self, fragments: list[Any]) -> list[sse.Data]:
        events = []
        for fragment in fragments:
            call, started, piece = self.streamed.fragment(fragment, self.next_output)
            if call is None:
                continue
            where = {"item_id": call.item_id, "output_index": call.output_index}
            if started:
                self.next_output += 1
                item = {**call.item("in_progress"), "arguments": ""}
                events.append(
                    self._event(
                        "response.output_item.added", output_index=call.output_index, item=item
                    )
                )
            if piece:
                events.append(
                    self._event("response.function_call_arguments.delta", delta=piece, **where)
                )
        return events

    def chunk(self, payload: str, data: dict[str, Any], keep_usage: bool) -> list[sse.Data]:
        usage = data.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
        events = []
        for choice in data.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            text = delta.get("content") if isinstance(delta, dict) else None
            if isinstance(text, str) and text:
                text = unicode_text(text)
                if self.message_index is None:
                    self._place_message()
                    events += self._message_added()
                self.text.append(text)
                events.append(
                    self._event(
                        "response.output_text.delta",
                        item_id=self.message_id,
                        output_index=self.message_index,
                        content_index=0,
                        delta=text,
                        logprobs=[],
                    )
                )
            fragments = delta.get("tool_calls") if isinstance(delta, dict) else None
            if isinstance(fragments, list):
                events += self._call_events(fragments)
            if isinstance(choice.get("finish_reason"), str):
                self.finish_reason = choice["finish_reason"]
        return events

    async def finished(self) -> list[sse.Data]:
        status = self._status_of_answer()
        unplaced = self.message_index is None and not self.calls
        if unplaced:  # no text and no call: the output is one empty message
            self._place_message()
        output = await self._finish(status)
        if self.record.status is not status:  # failed by recovery meanwhile: what is stored
            return [self._event("response.failed", response=response_object(self.record, output))]
        events = self._message_added() if unplaced else []
        for index, item in enumerate(output):
            where = {"item_id": item["id"], "output_index": index}
            if item["type"] == "function_call":
                events.append(
                    self._event(
                        "response.function_call_arguments.done",
                        arguments=item["arguments"],
                        **where,
                    )
                )
            else:
                text = "".join(self.text)
                events += [
                    self._event(
                        "response.output_text.done",
                        text=text,
                        logprobs=[],
                        content_index=0,
                        **where,
                    ),
                    self._event(
                        "response.content_part.done", part=self._part(), content_index=0, **where
                    ),
                ]
            events.append(self._event("response.output_item.done", output_index=index, item=item))
        terminal = (
            "response.completed" if status is ResponseStatus.COMPLETED else "response.incomplete"
        )
        return [*events, self._event(terminal, response=response_object(self.record, output))]

    async def failed(self, message: str, code: str) -> list[sse.Data]:
        error = _error(message, code)
        try:
            output = await self._finish(
                ResponseStatus.FAILED, error=error, with_output=bool(self.text or self.calls)
            )
        except StorageError:
            log.exception("response %s: its failure could not be stored", self.record.id)
            output = self._output("incomplete")
        return [self._event("response.failed", response=response_object(self.record, output))]

    async def cancelled(self) -> None:
        if self.done:
            return
        try:
            await self._finish(ResponseStatus.CANCELLED, with_output=bool(self.text or self.calls))
        except StorageError:
            log.exception("response %s: its cancellation could not be stored", self.record.id)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
