"""An OpenAI-compatible upstream over aiohttp. One session (one connection pool) per process,
shared by every model; timeouts per model."""

from __future__ import annotations

import asyncio
import codecs
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from routekeeper.contract.strict_json import loads_strict
from routekeeper.upstream.client import HttpClient, encode_json, env_proxy
from routekeeper.upstream.config import OpenAIModelBackend
from routekeeper.upstream.errors import UpstreamError, UpstreamErrorKind

# SSE lines end with CRLF, LF or CR (and nothing else: U+2028 may sit inside a JSON string).
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


class UpstreamPool(HttpClient):
    """The shared client of every OpenAI-compatible model. Tests and fault injection point a
    model's ``base_url`` at a fake server (``routekeeper.testing.FakeUpstream``, or a local
    socket that sends whatever bytes a test needs)."""


class OpenAITransport:
    def __init__(self, pool: UpstreamPool, backend: OpenAIModelBackend) -> None:
        self.pool = pool
        self.backend = backend
        self.url = f"{backend.base_url}/chat/completions"
        self.proxy = env_proxy(self.url)
        # Waiting for a pooled connection counts as connecting; then every read (the head, each
        # chunk of the body) may take up to timeout_seconds.
        self.timeout = aiohttp.ClientTimeout(
            total=None,
            connect=backend.timeout_seconds,
            sock_connect=backend.connect_timeout_seconds,
            sock_read=backend.timeout_seconds,
        )

    def _headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json", "accept": "application/json"}
        if self.backend.api_key_env:
            key = os.environ.get(self.backend.api_key_env)
            if key:
                headers["authorization"] = f"Bearer {key}"
        return headers

    def _body(self, body: dict[str, Any]) -> bytes:
        return encode_json({**body, "model": self.backend.model})

    def _post(self, body: dict[str, Any]) -> Any:
        return self.pool.session.post(
            self.url,
            data=self._body(body),
            headers=self._headers(),
            timeout=self.timeout,
            allow_redirects=False,
            proxy=self.proxy,
        )

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        """The whole answer within ``timeout_seconds`` (not only each read)."""
        try:
            async with asyncio.timeout(self.backend.timeout_seconds):
                async with self._post(body) as response:
                    content = await response.read()
                    status, retry_after = response.status, response.headers.get("retry-after")
        except aiohttp.ClientError as exc:
            raise _transport_error(exc) from exc
        except TimeoutError as exc:
            raise UpstreamError(
                UpstreamErrorKind.TIMEOUT, "upstream did not answer in time"
            ) from exc
        if status >= 400:
            raise _http_error(status, content, retry_after)
        try:
            # Only standard JSON: NaN or Infinity could not be sent on to the client.
            data = loads_strict(content)
        except ValueError as exc:
            raise UpstreamError(UpstreamErrorKind.PROTOCOL, "upstream sent invalid JSON") from exc
        if not isinstance(data, dict):
            raise UpstreamError(UpstreamErrorKind.PROTOCOL, "upstream sent a non-object JSON body")
        return data

    @asynccontextmanager
    async def stream(self, body: dict[str, Any]) -> AsyncIterator[AsyncIterator[str]]:
        try:
            response = await self._post(body)
        except aiohttp.ClientError as exc:
            raise _transport_error(exc) from exc
        except TimeoutError as exc:
            raise UpstreamError(
                UpstreamErrorKind.TIMEOUT, "upstream did not answer in time"
            ) from exc
        try:
            if response.status >= 300:
                try:
                    content = await response.read()
                except (aiohttp.ClientError, TimeoutError):
                    content = b""
                raise _http_error(response.status, content, response.headers.get("retry-after"))
            yield _data_lines(response)
        finally:
            if response.content.at_eof():
                response.release()  # read to the end: the connection goes back to the pool
            else:
                response.close()  # closing the connection is what cancels the upstream request

    async def aclose(self) -> None:
        return None  # the pool is closed by its owner


async def _chunks(content: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """The body as it arrives. When the connection breaks, aiohttp raises without handing out
    what it had already received; that is relayed first (it holds whole events the upstream
    sent before the break), then the error."""
    while True:
        try:
            chunk = await content.readany()
        except aiohttp.ClientPayloadError:
            received = b"".join(getattr(content, "_buffer", ()))
            if received:
                yield received
            raise
        if not chunk:
            return
        yield chunk


async def _lines(response: aiohttp.ClientResponse) -> AsyncIterator[str]:
    """The body's lines (without their line break), decoded as UTF-8 (invalid bytes replaced)."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    pending = ""
    async for chunk in _chunks(response.content):
        text = pending + decoder.decode(chunk)
        # A CR at the end of a chunk may be the first half of a CRLF: keep it for the next.
        carry = "\r" if text.endswith("\r") else ""
        *lines, rest = _LINE_BREAK.split(text[:-1] if carry else text)
        pending = rest + carry
        for line in lines:
            yield line
    *lines, rest = _LINE_BREAK.split(pending + decoder.decode(b"", final=True))
    for line in lines:
        yield line
    if rest:
        yield rest


async def _data_lines(response: aiohttp.ClientResponse) -> AsyncIterator[str]:
    """The ``data`` of each server-sent event: consecutive ``data:`` lines joined with newlines
    up to the blank line that ends the event; other fields and comments are ignored."""
    data: list[str] = []
    done = False
    try:
        async for line in _lines(response):
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
    except (aiohttp.ClientError, TimeoutError) as exc:
        if done:
            return  # the answer was complete; only the tail of the body was lost
        if isinstance(exc, TimeoutError):
            raise UpstreamError(UpstreamErrorKind.TIMEOUT, "upstream stream timed out") from exc
        raise UpstreamError(
            UpstreamErrorKind.PROTOCOL, f"upstream stream broke: {type(exc).__name__}"
        ) from exc
    if done or (data and "\n".join(data).strip() == "[DONE]"):
        return
    raise UpstreamError(UpstreamErrorKind.PROTOCOL, "upstream stream ended without [DONE]")


def _transport_error(exc: aiohttp.ClientError) -> UpstreamError:
    """aiohttp's failures as our kinds (its timeouts are also TimeoutErrors)."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError | aiohttp.ClientConnectorError):
        return UpstreamError(UpstreamErrorKind.CONNECT, f"upstream unreachable: {exc}")
    if isinstance(exc, TimeoutError):
        return UpstreamError(UpstreamErrorKind.TIMEOUT, "upstream did not answer in time")
    return UpstreamError(UpstreamErrorKind.PROTOCOL, f"upstream failed: {type(exc).__name__}")


def _http_error(status: int, content: bytes, retry_after: str | None) -> UpstreamError:
    try:
        body: Any = loads_strict(content) if content else None
    except ValueError:  # not JSON, NaN, or nested too deeply: keep the status only
        body = None
    return UpstreamError(
        UpstreamErrorKind.HTTP,
        f"upstream answered {status}",
        status=status,
        body=body,
        retry_after=retry_after,
    )
