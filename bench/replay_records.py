"""The replay record the benches that drive a ``ReplayRecorder`` directly write: one
non-streaming chat completion, started and then finished ``completed``."""

from __future__ import annotations

from typing import Any

from routekeeper.contract.ids import new_id
from routekeeper.contract.replay import LifecycleState, ReplayRecord, TerminalReason
from routekeeper.storage.types import utcnow


def chat_record() -> ReplayRecord:
    """A new ``in_progress`` record of a routed chat completion."""
    return ReplayRecord(
        id=new_id("rpl"),
        request_id=new_id("req"),
        replica_id="rep_bench",
        endpoint="/v1/chat/completions",
        started_at=utcnow(),
        requested_model="auto",
        selected_model="small",
        decision="default",
        stream=False,
    )


def completed() -> dict[str, Any]:
    """The changes of its finish (``ReplayRecorder.finish(record_id, **completed())``)."""
    return {
        "lifecycle_state": LifecycleState.COMPLETED,
        "terminal_reason": TerminalReason.RESPONSE_COMPLETE,
        "completed_at": utcnow(),
        "total_ms": 1.0,
    }
