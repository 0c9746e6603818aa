"""The upstream HTTP client on real sockets: connection reuse, the failure kinds, timeouts,
and no module lookups per request."""

from __future__ import annotations

import asyncio
import importlib.abc
import socket
import sys
import time
from typing import Any

import pytest

from routekeeper.testing import FakeUpstream, HandlerServer, Reply, Seen
from routekeeper.upstream.config import OpenAIModelBackend
from routekeeper.upstream.errors import UpstreamError, UpstreamErrorKind
from routekeeper.upstream.openai import OpenAITransport, UpstreamPool

BODY: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}]}
SSE = b'data: {"choices": []}\n\ndata: [DONE]\n\n'


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def transport_to(pool: UpstreamPool, base_url: str, **backend: Any) -> OpenAITransport:
    return OpenAITransport(pool, OpenAIModelBackend(base_url=base_url, model="m", **backend))


async def drain(transport: OpenAITransport) -> list[str]:
    async with transport.stream({**BODY, "stream": True}) as chunks:
        return [c async for c in chunks]


class Lookups(importlib.abc.MetaPathFinder):
    """Notes every module the import system is asked to find (then lets the others look)."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def find_spec(self, name: str, path: Any, target: Any = None) -> None:
        self.names.append(name)


async def test_no_module_lookups_per_request() -> None:
    """A failed import (an optional package that is not installed) scans sys.path each time;
    after the first request nothing on the request path may import anything."""
    pool = UpstreamPool()
    try:
        with FakeUpstream(models=["m"]) as up:
            transport = transport_to(pool, up.base_url)
            await transport.complete(BODY)
            await drain(transport)
            lookups = Lookups()
            sys.meta_path.insert(0, lookups)
            try:
                for _ in range(5):
                    assert (await transport.complete(BODY))["object"] == "chat.completion"
                    assert len(await drain(transport)) >= 2
            finally:
                sys.meta_path.remove(lookups)
        assert lookups.names == []
    finally:
        await pool.aclose()


async def test_streams_and_answers_reuse_one_connection() -> None:
    def handler(request: Seen) -> Reply:
        if request.json().get("stream"):
            return Reply(200, SSE, {"content-type": "text/event-stream"})
        return Reply(200, {"object": "chat.completion", "choices": []})

    pool = UpstreamPool()
    try:
        with HandlerServer(handler) as server:
            transport = transport_to(pool, f"{server.url}/v1")
            for _ in range(3):
                async with transport.stream({**BODY, "stream": True}) as chunks:
                    assert [c async for c in chunks] == ['{"choices": []}']
                await transport.complete(BODY)
            assert len({r.peer for r in server.seen}) == 1, server.seen
    finally:
        await pool.aclose()


async def test_a_stream_left_early_closes_its_connection() -> None:
    """Leaving the stream before its end (a client disconnect) closes the upstream connection:
    the next request needs a new one."""
    with FakeUpstream(models=["m"], stream_chunks=20, chunk_delay_ms=50) as up:
        pool = UpstreamPool()
        try:
            transport = transport_to(pool, up.base_url)
            async with transport.stream({**BODY, "stream": True}) as chunks:
                await anext(chunks)
            # The socket closes on the loop's next turn: wait without blocking the loop.
            assert await asyncio.to_thread(up.wait_for_disconnects, 1, 5)
            up.configure(chunk_delay_ms=0)
            assert len(await drain(transport)) == 21  # it still works, on a new connection
        finally:
            await pool.aclose()


@pytest.mark.parametrize("stream", [False, True])
async def test_unreachable_is_connect(stream: bool) -> None:
    pool = UpstreamPool()
    try:
        transport = transport_to(pool, f"http://127.0.0.1:{closed_port()}/v1")
        with pytest.raises(UpstreamError) as info:
            await (drain(transport) if stream else transport.complete(BODY))
        assert info.value.kind is UpstreamErrorKind.CONNECT
        assert (info.value.status, info.value.code) == (502, "upstream_unreachable")
    finally:
        await pool.aclose()


async def test_connect_timeout_is_connect() -> None:
    """A listener whose backlog is full never completes the handshake."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        for _ in range(8):  # fill the accept queue (SYNs to a full queue are dropped)
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            fillers.append(s)
        pool = UpstreamPool()
        try:
            transport = transport_to(
                pool, f"http://127.0.0.1:{port}/v1", connect_timeout_seconds=0.3
            )
            started = time.monotonic()
            with pytest.raises(UpstreamError) as info:
                await transport.complete(BODY)
            assert info.value.kind is UpstreamErrorKind.CONNECT, info.value.message
            assert time.monotonic() - started < 5
        finally:
            await pool.aclose()
            for s in fillers:
                s.close()


@pytest.mark.parametrize("stream", [False, True])
async def test_a_hung_upstream_is_a_timeout(stream: bool) -> None:
    with FakeUpstream(models=["m"], hang=True) as up:
        pool = UpstreamPool()
        try:
            transport = transport_to(pool, up.base_url, timeout_seconds=0.3)
            started = time.monotonic()
            with pytest.raises(UpstreamError) as info:
                await (drain(transport) if stream else transport.complete(BODY))
            assert info.value.kind is UpstreamErrorKind.TIMEOUT
            assert (info.value.status, info.value.code) == (504, "upstream_timeout")
            assert time.monotonic() - started < 5
        finally:
            await pool.aclose()


async def test_timeout_seconds_bounds_the_whole_answer() -> None:
    """A server that keeps sending (each read is quick) still ends at timeout_seconds."""
    with FakeUpstream(models=["m"], stream_chunks=40, chunk_delay_ms=50) as up:
        pool = UpstreamPool()
        try:
            transport = transport_to(pool, up.base_url, timeout_seconds=0.5)
            started = time.monotonic()
            with pytest.raises(UpstreamError) as info:
                # Not a stream for routekeeper, but the server streams its body slowly.
                await transport.complete({**BODY, "stream": True})
            assert info.value.kind is UpstreamErrorKind.TIMEOUT
            assert time.monotonic() - started < 1.5
        finally:
            await pool.aclose()


async def test_a_stream_cut_mid_body_is_a_protocol_error() -> None:
    with FakeUpstream(models=["m"], fail_after_chunks=2) as up:
        pool = UpstreamPool()
        try:
            transport = transport_to(pool, up.base_url)
            seen: list[str] = []
            with pytest.raises(UpstreamError) as info:
                async with transport.stream({**BODY, "stream": True}) as chunks:
                    async for chunk in chunks:
                        seen.append(chunk)
            assert info.value.kind is UpstreamErrorKind.PROTOCOL and len(seen) == 2
        finally:
            await pool.aclose()


@pytest.mark.parametrize(
    ("reply", "kind", "status"),
    [
        (Reply(429, {"error": {"message": "slow down"}}, {"retry-after": "7"}), "http", 429),
        (Reply(200, "not json"), "protocol", 502),
        (Reply(200, "[1, 2]"), "protocol", 502),
        (Reply(200, '{"a": NaN}'), "protocol", 502),
    ],
)
async def test_answers_that_are_errors(reply: Reply, kind: str, status: int) -> None:
    pool = UpstreamPool()
    try:
        with HandlerServer(lambda request: reply) as server:
            with pytest.raises(UpstreamError) as info:
                await transport_to(pool, f"{server.url}/v1").complete(BODY)
        assert info.value.kind.value == kind and info.value.status == status
        if status == 429:
            assert info.value.headers() == {"retry-after": "7"}
            assert info.value.message == "slow down"
    finally:
        await pool.aclose()


async def test_the_environment_proxy_is_used_unless_no_proxy_names_the_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """HTTP_PROXY / NO_PROXY as httpx honoured them (read when the model is set up)."""
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    pool = UpstreamPool()
    try:
        answer = {"object": "chat.completion", "choices": []}
        with HandlerServer(lambda request: Reply(200, answer)) as proxy:
            monkeypatch.setenv("HTTP_PROXY", proxy.url)
            through = transport_to(pool, "http://upstream.invalid/v1")
            assert await through.complete(BODY) == answer
            assert proxy.seen[0].path == "http://upstream.invalid/v1/chat/completions"
            monkeypatch.setenv("NO_PROXY", "upstream.invalid")
            direct = transport_to(pool, "http://upstream.invalid/v1")
            with pytest.raises(UpstreamError) as info:
                await direct.complete(BODY)
            assert info.value.kind is UpstreamErrorKind.CONNECT
            assert len(proxy.seen) == 1
    finally:
        await pool.aclose()
