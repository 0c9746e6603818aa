"""Rate limits shared by every replica with the same ``redis.url`` (several machines).

One sorted set per limited key (``routekeeper:rate:<key id>``), one member per counted
request scored by Redis's own clock (``TIME``, so the replicas' clocks do not matter). One Lua
script per request prunes the members older than the window, counts, adds the request when
below the limit and sets the set's TTL to the window: atomic on the Redis server, so the limit
is exact however many replicas share it, and an idle key's set expires by itself.

Redis down (refused, timed out, any Redis error): the request goes through without the
headers (fail open), ``routekeeper_rate_limit_checks_total{outcome="unchecked"}`` counts it,
a warning is logged at most once a minute, and Redis is tried again after
``RETRY_SECONDS`` (not on every request meanwhile)."""

from __future__ import annotations

import itertools
import logging
import os
import secrets
import time
from typing import Any

from routekeeper.auth.limits import WINDOW_SECONDS, LimiterCounts
from routekeeper.contract.auth import Principal
from routekeeper.storage.config import redact_dsn

log = logging.getLogger(__name__)

KEY_PREFIX = "routekeeper:rate:"
TIMEOUT_SECONDS = 0.5
"""Connect and answer timeout of one check: past it the request passes unchecked."""
RETRY_SECONDS = 1.0
"""After a failure, requests pass unchecked this long before Redis is tried again."""

# KEYS[1]: the key's set. ARGV: window (microseconds), limit, this request's member.
# Returns {allowed (0|1), requests in the window, microseconds until the oldest leaves it}.
SLIDING_WINDOW = """
local now = redis.call('TIME')
local now_us = tonumber(now[1]) * 1000000 + tonumber(now[2])
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_us - window)
local count = redis.call('ZCARD', KEYS[1])
local allowed = 0
if count < limit then
  redis.call('ZADD', KEYS[1], now_us, ARGV[3])
  count = count + 1
  allowed = 1
end
redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000))
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local reset = window
if oldest[2] then
  reset = tonumber(oldest[2]) + window - now_us
end
return {allowed, count, reset}
"""


class RedisLimiter:
    """Sliding-log limits counted in Redis at ``url`` (connected on first use)."""

    kind = "redis"

    def __init__(self, url: str) -> None:
        self.url = url
        self.counts = LimiterCounts(self.kind, log)
        self._client: Any = None
        self._script: Any = None
        self._retry_at = 0.0
        # A request's member: unique across processes (pid, a random prefix, a counter).
        self._member_prefix = f"{os.getpid()}:{secrets.token_hex(4)}:"
        self._serial = itertools.count()

    def _connect(self) -> Any:
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # No retries (the client's default is 10 with back-off): a request waits for at most
        # one timeout, then passes unchecked.
        self._client = Redis.from_url(
            self.url,
            socket_timeout=TIMEOUT_SECONDS,
            socket_connect_timeout=TIMEOUT_SECONDS,
            retry=Retry(NoBackoff(), 0),
        )
        self._script = self._client.register_script(SLIDING_WINDOW)
        return self._script

    async def hit(self, principal: Principal) -> dict[str, str] | None:
        from redis.exceptions import RedisError

        limit = principal.requests_per_minute
        key_id = principal.key_id
        if limit is None or key_id is None:
            return None
        if time.monotonic() < self._retry_at:
            self.counts.unchecked(
                f"Redis at {redact_dsn(self.url)} failed less than {RETRY_SECONDS:g}s ago"
            )
            return None
        script = self._script or self._connect()
        member = f"{self._member_prefix}{next(self._serial)}"
        try:
            allowed, count, reset_us = await script(
                keys=[KEY_PREFIX + key_id],
                args=[int(WINDOW_SECONDS * 1_000_000), limit, member],
            )
        except (RedisError, OSError, TimeoutError) as exc:
            self._retry_at = time.monotonic() + RETRY_SECONDS
            self.counts.unchecked(
                f"Redis at {redact_dsn(self.url)} cannot be reached: {type(exc).__name__}: {exc}"
            )
            return None
        return self.counts.decide(limit, key_id, bool(allowed), int(count), reset_us / 1e6)

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client, self._script = self._client, None, None
            await client.aclose()
