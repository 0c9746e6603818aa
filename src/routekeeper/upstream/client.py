"""The HTTP client every upstream call goes through (chat models and the remote embedder):
one aiohttp session per owner, created on first use inside the running event loop (aiohttp
binds a session to its loop), with a connection pool whose per-request cost does not grow
with the number of pooled connections."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

import aiohttp

# Idle pooled connections are closed after this long. Below the 5 s idle timeout of common
# servers (uvicorn, gunicorn), so a pooled connection is not reused just as the server drops it.
KEEPALIVE_SECONDS = 4.0
MAX_CONNECTIONS = 1000


def encode_json(value: Any) -> bytes:
    """A request body as compact UTF-8 JSON (the value was checked: no NaN, no lone
    surrogates)."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def env_proxy(url: str) -> str | None:
    """The proxy the environment names for ``url`` (``HTTP_PROXY``, ``HTTPS_PROXY``,
    ``ALL_PROXY``, less ``NO_PROXY``), read once per model rather than on every request."""
    parts = urlsplit(url)
    if proxy_bypass(parts.hostname or ""):
        return None
    proxies = getproxies()
    return proxies.get(parts.scheme) or proxies.get("all")


class HttpClient:
    """A lazily created ``aiohttp.ClientSession``; ``aclose()`` closes its connections."""

    def __init__(self, *, max_connections: int = MAX_CONNECTIONS) -> None:
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            if self._closed:
                raise RuntimeError("the upstream client is closed")
            connector = aiohttp.TCPConnector(
                limit=self._max_connections,
                limit_per_host=0,
                keepalive_timeout=KEEPALIVE_SECONDS,
                ttl_dns_cache=10,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                # Timeouts are given per request; none by default.
                timeout=aiohttp.ClientTimeout(total=None),
                # No cookie jar: an upstream's cookies must not leak between clients.
                cookie_jar=aiohttp.DummyCookieJar(),
                raise_for_status=False,
            )
        return self._session

    async def aclose(self) -> None:
        self._closed = True
        if self._session is not None and not self._session.closed:
            await self._session.close()
