"""One chat request's trace: timings, usage and outcome, reported once to the replay recorder
and to the metrics when the request ends (however it ends)."""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from typing import Any

from routekeeper.contract.auth import ANONYMOUS, Principal
from routekeeper.contract.ids import new_id
from routekeeper.contract.replay import LifecycleState, ReplayRecord, TerminalReason
from routekeeper.router.services.chat import ChatPlan
from routekeeper.router.services.metrics import RouterMetrics
from routekeeper.router.services.replay import ReplayRecorder
from routekeeper.storage.types import INT32_MAX, utcnow
from routekeeper.upstream.errors import UpstreamError, UpstreamErrorKind
from routekeeper.upstream.messages import user_text

# The searchable prompt text is cut here whatever max_body_bytes says: PostgreSQL's tsvector
# (the full-text index) refuses more than 1 MB, about 600 KB of prose.
PROMPT_TEXT_MAX_BYTES = 128 * 1024


def truncate_utf8(text: str, max_bytes: int) -> tuple[str, bool]:
    """At most ``max_bytes`` of UTF-8, never cutting a character in half."""
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= max_bytes:
        return text, False
    return data[:max_bytes].decode("utf-8", "ignore"), True


class RequestTrace:
    def __init__(
        self,
        plan: ChatPlan,
        *,
        recorder: ReplayRecorder,
        metrics: RouterMetrics,
        replica_id: str,
        requested_model: str,
        session_id: str | None,
        started: float,
        client_body: dict[str, Any] | None = None,
        endpoint: str = "/v1/chat/completions",
        response_id: str | None = None,
        principal: Principal = ANONYMOUS,
    ) -> None:
        self.plan = plan
        self.recorder = recorder
        self.metrics = metrics
        self.started = started
        self.routed = time.perf_counter()
        self.first_byte: float | None = None
        self.usage: dict[str, Any] | None = None
        self.done: asyncio.Future[bool | None] | None = None
        signals: dict[str, list[dict[str, Any]]] = defaultdict(list)
        if plan.routing is not None:
            for s in plan.routing.matched_signals:
                signals[s.family].append({"name": s.name, "score": s.score})
        self.capture = plan.decision.plugins.replay if plan.decision else None
        self._response_text: list[str] = []
        self._response_size = 0
        captured: dict[str, Any] = {}
        if self.capture is not None and self.capture.capture_request_body:
            text, cut = truncate_utf8(
                json.dumps(client_body, ensure_ascii=False), self.capture.max_body_bytes
            )
            limit = min(self.capture.max_body_bytes, PROMPT_TEXT_MAX_BYTES)
            captured = {
                "request_body": text,
                "request_body_truncated": cut,
                "prompt_text": truncate_utf8(user_text(client_body or {}), limit)[0],
            }
        self.record = ReplayRecord(
            id=new_id("rpl"),
            request_id=new_id("req"),
            replica_id=replica_id,
            endpoint=endpoint,
            started_at=utcnow(),
            requested_model=requested_model,
            selected_model=plan.model.name,
            decision=plan.decision.name if plan.decision else None,
            stream=plan.stream,
            session_id=session_id,
            signals=dict(signals),
            routing_ms=round((self.routed - started) * 1000, 3),
            response_id=response_id,
            tenant_id=principal.tenant,
            key_id=principal.key_id,
            **captured,
        )
        recorder.start(self.record)

    @property
    def replay_id(self) -> str:
        return self.record.id

    @property
    def captures_response(self) -> bool:
        return self.capture is not None and self.capture.capture_response_body

    def capture_response(self, text: str) -> None:
        """Add response text (a JSON answer, or a stream's content deltas) to the capture."""
        if self.captures_response and self._response_size <= (
            self.capture.max_body_bytes if self.capture else 0
        ):
            self._response_text.append(text)
            self._response_size += len(text.encode("utf-8", "surrogatepass"))

    def mark_first_byte(self) -> None:
        if self.first_byte is None:
            self.first_byte = time.perf_counter()

    def _ms(self, at: float | None) -> float | None:
        return None if at is None else round((at - self.started) * 1000, 3)

    def _finish(
        self, state: LifecycleState, reason: TerminalReason, **changes: Any
    ) -> asyncio.Future[bool | None]:
        if self.done is not None:
            return self.done
        now = time.perf_counter()
        usage = self.usage or {}
        prompt, completion, total = (
            token_count(usage.get(key))
            for key in ("prompt_tokens", "completion_tokens", "total_tokens")
        )
        pricing = self.plan.model.pricing
        cost = None
        if pricing is not None and prompt is not None and completion is not None:
            cost = (prompt * pricing.prompt_per_1m + completion * pricing.completion_per_1m) / 1e6
        self.done = self.recorder.finish(
            self.record.id,
            lifecycle_state=state,
            terminal_reason=reason,
            completed_at=utcnow(),
            ttfb_ms=self._ms(self.first_byte),
            total_ms=self._ms(now),
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=total,
            cost=cost,
            currency=pricing.currency if cost is not None and pricing else None,
            **changes,
            **self._captured_response(),
        )
        decision = self.plan.decision.name if self.plan.decision else None
        self.metrics.observe(decision, self.plan.model.name, state.value, now - self.started)
        return self.done

    async def acknowledged(self) -> bool:
        """Wait for the record's commit (``replay.durability: acknowledged``, at most
        ``replay.ack_timeout_ms``): call after ``completed``/``failed`` and before the last byte
        goes out. True when the record is committed."""
        if self.done is None:
            return False
        return await self.recorder.acknowledge(self.done)

    def response_headers(self, durable: bool | None = None) -> dict[str, str]:
        """The replay id and whether its record was committed before the answer (``durable``;
        None: what a stream can promise at its first byte). Nothing when replay is off."""
        if not self.recorder.enabled:
            return {}
        if durable is None:
            durable = self.recorder.will_acknowledge(self.record.id)
        return {
            "x-routekeeper-replay-id": self.record.id,
            REPLAY_DURABLE_HEADER: "true" if durable else "false",
        }

    def _captured_response(self) -> dict[str, Any]:
        if not self.captures_response or self.capture is None:
            return {}
        text, cut = truncate_utf8("".join(self._response_text), self.capture.max_body_bytes)
        return {"response_body": text, "response_body_truncated": cut}

    def completed(self, status: int = 200) -> asyncio.Future[bool | None]:
        return self._finish(
            LifecycleState.COMPLETED, TerminalReason.RESPONSE_COMPLETE, upstream_status=status
        )

    def failed(self, exc: UpstreamError) -> asyncio.Future[bool | None]:
        if self.done is None:
            self.metrics.upstream_failed(exc.kind.value, exc.upstream_status)
        reason = (
            TerminalReason.UPSTREAM_TIMEOUT
            if exc.kind is UpstreamErrorKind.TIMEOUT
            else TerminalReason.UPSTREAM_ERROR
        )
        return self._finish(
            LifecycleState.FAILED,
            reason,
            upstream_status=_status(exc.upstream_status),
            error=exc.message[:2000],
        )

    def canceled(self) -> None:
        self._finish(LifecycleState.ABORTED, TerminalReason.CLIENT_CANCELED)

    def shut_down(self) -> asyncio.Future[bool | None]:
        """The server's shutdown budget ended the request (SIGTERM)."""
        return self._finish(LifecycleState.ABORTED, TerminalReason.SERVER_SHUTDOWN)

    def internal_error(self) -> asyncio.Future[bool | None]:
        """routekeeper itself failed (a bug): the record still says how the request ended."""
        return self._finish(LifecycleState.FAILED, TerminalReason.INTERNAL_ERROR)


REPLAY_DURABLE_HEADER = "x-routekeeper-replay-durable"


def token_count(value: Any) -> int | None:
    """An upstream's token count, or None when it is not a plausible one (a negative, a bool,
    a float, or beyond what a 4-byte count column holds: no request has 2**31 tokens)."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if 0 <= value <= INT32_MAX else None


def _status(status: int | None) -> int | None:
    return status if status is None or 0 <= status <= INT32_MAX else None
