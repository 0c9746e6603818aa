"""Per-key rate limits: a key with ``requests_per_minute`` N may make N requests in any
rolling 60 seconds (a burst of N at once included); past that it gets 429 with
``retry-after`` (when its oldest counted request leaves the window).

One implementation per scope: ``MemoryLimiter`` counts in this process (one replica, one
process)."""

from __future__ import annotations

import math
import time
from collections import deque
from typing import Protocol

from routekeeper.contract.auth import Principal
from routekeeper.contract.errors import RateLimited

WINDOW_SECONDS = 60.0


def limit_headers(limit: int, remaining: int, reset_seconds: float) -> dict[str, str]:
    """OpenAI's rate-limit headers (``reset`` as a duration, ``1s``, ``12.5s``)."""
    return {
        "x-ratelimit-limit-requests": str(limit),
        "x-ratelimit-remaining-requests": str(max(0, remaining)),
        "x-ratelimit-reset-requests": f"{max(reset_seconds, 0.0):.3g}s",
    }


def refused(limit: int, key_id: str | None, retry_after: float) -> RateLimited:
    wait = max(1, math.ceil(retry_after))
    return RateLimited(
        f"Rate limit reached for API key {key_id}: {limit} requests per minute. Retry in {wait}s.",
        retry_after=wait,
        headers=limit_headers(limit, 0, retry_after),
    )


class RateLimiter(Protocol):
    async def hit(self, principal: Principal) -> dict[str, str] | None:
        """Count one request of ``principal``'s key: its rate-limit headers, or
        RateLimited (429) past the limit."""


class MemoryLimiter:
    """Sliding-log limits counted in this process."""

    def __init__(self) -> None:
        self._logs: dict[str, deque[float]] = {}

    async def hit(self, principal: Principal) -> dict[str, str] | None:
        limit = principal.requests_per_minute
        if limit is None or principal.key_id is None:
            return None
        now = time.monotonic()
        log = self._logs.setdefault(principal.key_id, deque())
        while log and log[0] <= now - WINDOW_SECONDS:
            log.popleft()
        if len(log) >= limit:
            raise refused(limit, principal.key_id, log[0] + WINDOW_SECONDS - now)
        log.append(now)
        return limit_headers(limit, limit - len(log), log[0] + WINDOW_SECONDS - now)
