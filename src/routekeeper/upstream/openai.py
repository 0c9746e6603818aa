"""An OpenAI-compatible upstream over httpx. One AsyncClient (one connection pool) per
process, shared by every model; timeouts per model."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from routekeeper.contract.strict_json import loads_strict
from routekeeper.upstream.config import OpenAIModelBackend
from routekeeper.upstream.errors import UpstreamError, UpstreamErrorKind


class UpstreamPool:
    """The shared httpx client; ``transport`` is the test seam (fault injection)."""

    def __init__(self, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.client = httpx.AsyncClient(
            transport=transport,
            limits=httpx.Limits(max_connections=1000, max_keepalive_connections=100),
            follow_redirects=False,
        )

    async def aclose(self) -> None:
        await self.client.aclose()


class OpenAITransport:
    def __init__(self, pool: UpstreamPool, backend: OpenAIModelBackend) -> None:
        self.pool = pool
        self.backend = backend
        self.url = f"{backend.base_url}/chat/completions"
        self.timeout = httpx.Timeout(
            backend.timeout_seconds, connect=backend.connect_timeout_seconds
        )

    def _headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json", "accept": "application/json"}
        if self.backend.api_key_env:
            key = os.environ.get(self.backend.api_key_env)
            if key:
                headers["authorization"] = f"Bearer {key}"
        return headers

    def _body(self, body: dict[str, Any]) -> dict[str, Any]:
        return {**body, "model": self.backend.model}

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        """The whole answer within ``timeout_seconds`` (not only each read)."""
        try:
            async with asyncio.timeout(self.backend.timeout_seconds):
                response = await self.pool.client.post(
                    self.url, json=self._body(body), headers=self._headers(), timeout=self.timeout
                )
        except TimeoutError as exc:
            raise UpstreamError(
                UpstreamErrorKind.TIMEOUT, "upstream did not answer in time"
            ) from exc
        except httpx.HTTPError as exc:
            raise _transport_error(exc) from exc
        if response.status_code >= 400:
            raise _http_error(response, response.content)
        try:
            # Only standard JSON: NaN or Infinity could not be sent on to the client.
            data = loads_strict(response.content)
        except ValueError as exc:
            raise UpstreamError(UpstreamErrorKind.PROTOCOL, "upstream sent invalid JSON") from exc
        if not isinstance(data, dict):
            raise UpstreamError(UpstreamErrorKind.PROTOCOL, "upstream sent a non-object JSON body")
        return data

    @asynccontextmanager
    async def stream(self, body: dict[str, Any]) -> AsyncIterator[AsyncIterator[str]]:
        request = self.pool.client.build_request(
            "POST", self.url, json=self._body(body), headers=self._headers(), timeout=self.timeout
        )
        try:
            response = await self.pool.client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise _transport_error(exc) from exc
        try:
            if response.status_code >= 300:
                try:
                    content = await response.aread()
                except httpx.HTTPError:
                    content = b""
                raise _http_error(response, content)
            yield _data_lines(response)
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        return None  # the pool is closed by its owner


async def _data_lines(response: httpx.Response) -> AsyncIterator[str]:
    """The ``data`` of each server-sent event: consecutive ``data:`` lines joined with newlines
    up to the blank line that ends the event; other fields and comments are ignored."""
    data: list[str] = []
    done = False
    try:
        async for line in response.aiter_lines():
            if done:
                continue  # read to the end of the body so the connection can be reused
            if line == "":
                if data:
                    payload = "\n".join(data)
                    data = []
                    if payload.strip() == "[DONE]":
                        done = True
                        continue
                    yield payload
                continue
            if line.startswith("data:"):
                value = line[5:]
                data.append(value[1:] if value.startswith(" ") else value)
    except httpx.HTTPError as exc:
        if done:
            return  # the answer was complete; only the tail of the body was lost
        if isinstance(exc, httpx.TimeoutException):
            raise UpstreamError(UpstreamErrorKind.TIMEOUT, "upstream stream timed out") from exc
        raise UpstreamError(
            UpstreamErrorKind.PROTOCOL, f"upstream stream broke: {type(exc).__name__}"
        ) from exc
    if done or (data and "\n".join(data).strip() == "[DONE]"):
        return
    raise UpstreamError(UpstreamErrorKind.PROTOCOL, "upstream stream ended without [DONE]")


def _transport_error(exc: httpx.HTTPError) -> UpstreamError:
    if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
        return UpstreamError(UpstreamErrorKind.TIMEOUT, "upstream did not answer in time")
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return UpstreamError(UpstreamErrorKind.CONNECT, f"upstream unreachable: {exc}")
    return UpstreamError(UpstreamErrorKind.PROTOCOL, f"upstream failed: {type(exc).__name__}")


def _http_error(response: httpx.Response, content: bytes) -> UpstreamError:
    try:
        body: Any = loads_strict(content) if content else None
    except ValueError:  # not JSON, NaN, or nested too deeply: keep the status only
        body = None
    return UpstreamError(
        UpstreamErrorKind.HTTP,
        f"upstream answered {response.status_code}",
        status=response.status_code,
        body=body,
        retry_after=response.headers.get("retry-after"),
    )
