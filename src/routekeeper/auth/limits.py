"""Per-key rate limits: a key with ``requests_per_minute`` N may make N requests in any
rolling 60 seconds (a burst of N at once included); past that it gets 429 with
``retry-after`` (when its oldest counted request leaves the window). A refused request is
not counted. Keys without a limit never reach a limiter.

One implementation per scope, chosen by ``compose.build_limiter``:

- ``MemoryLimiter``: counted in this process (one replica, one process);
- ``WorkspaceLimiter`` (``limits_workspace.py``): the processes of one ``serve --workers N``
  count in a small SQLite file of the workspace, one short write transaction per request;
- ``RedisLimiter`` (``limits_redis.py``): every replica with the same ``redis.url`` counts in
  one sorted set per key, changed by one atomic script per request.

When the shared count cannot be reached (Redis down, the file unwritable) a limiter fails
open: the request goes through without the headers, the ``unchecked`` outcome of
``routekeeper_rate_limit_checks_total`` counts it, and a warning is logged at most once a
minute."""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Iterator
from typing import Protocol

from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from routekeeper.contract.auth import Principal
from routekeeper.contract.errors import RateLimited

WINDOW_SECONDS = 60.0
UNCHECKED_LOG_SECONDS = 60.0
"""At most one warning this often while requests pass unchecked."""


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
    kind: str
    """Where it counts: ``memory``, ``workspace`` or ``redis`` (a label of its metrics)."""

    async def hit(self, principal: Principal) -> dict[str, str] | None:
        """Count one request of ``principal``'s key: its rate-limit headers, None when the
        key has no limit or the count cannot be reached (fail open), or RateLimited (429)
        past the limit."""

    counts: LimiterCounts
    """What it decided (the collector of its metrics)."""

    async def aclose(self) -> None:
        """Release its connections (the replica is stopped)."""


class LimiterCounts(Collector):
    """What a limiter decided, for ``/metrics`` (a Prometheus collector), and the
    once-a-minute warning while the shared count cannot be reached."""

    def __init__(self, kind: str, log: logging.Logger) -> None:
        self.kind = kind
        self.log = log
        self.counts = {"allowed": 0, "refused": 0, "unchecked": 0}
        self._unchecked_since_log = 0
        self._next_log = 0.0

    def decide(
        self, limit: int, key_id: str | None, allowed: bool, count: int, reset_seconds: float
    ) -> dict[str, str]:
        """The headers of an allowed request (``count`` requests in the window with it), or
        RateLimited."""
        if not allowed:
            self.counts["refused"] += 1
            raise refused(limit, key_id, reset_seconds)
        self.counts["allowed"] += 1
        return limit_headers(limit, limit - count, reset_seconds)

    def unchecked(self, reason: str) -> None:
        """A request passed without a check (``reason`` names the failure, no secret)."""
        self.counts["unchecked"] += 1
        self._unchecked_since_log += 1
        now = time.monotonic()
        if now >= self._next_log:
            self.log.warning(
                "rate limits are not enforced (%s limiter): %s; requests of limited keys pass "
                "unchecked (%d since the last message, counted in "
                'routekeeper_rate_limit_checks_total{outcome="unchecked"})',
                self.kind,
                reason,
                self._unchecked_since_log,
            )
            self._unchecked_since_log = 0
            self._next_log = now + UNCHECKED_LOG_SECONDS

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "routekeeper_rate_limit_checks",
            "Requests of rate-limited keys by outcome: allowed, refused (429) and unchecked "
            "(passed without a check because the shared count could not be reached).",
            labels=["limiter", "outcome"],
        )
        for outcome, value in self.counts.items():
            family.add_metric([self.kind, outcome], value)
        yield family

    def describe(self) -> Iterator[Metric]:
        return self.collect()


class MemoryLimiter:
    """Sliding-log limits counted in this process."""

    kind = "memory"

    def __init__(self) -> None:
        self._logs: dict[str, deque[float]] = {}
        self.counts = LimiterCounts(self.kind, logging.getLogger(__name__))

    async def hit(self, principal: Principal) -> dict[str, str] | None:
        limit = principal.requests_per_minute
        if limit is None or principal.key_id is None:
            return None
        now = time.monotonic()
        log = self._logs.setdefault(principal.key_id, deque())
        while log and log[0] <= now - WINDOW_SECONDS:
            log.popleft()
        allowed = len(log) < limit
        if allowed:
            log.append(now)
        reset = log[0] + WINDOW_SECONDS - now
        return self.counts.decide(limit, principal.key_id, allowed, len(log), reset)

    async def aclose(self) -> None:
        self._logs.clear()
