"""An OpenAI-compatible fake upstream on a real TCP socket, for tests and benchmarks.

    with FakeUpstream() as up:                   # 127.0.0.1:<free port>, own thread and loop
        client = openai.OpenAI(base_url=up.base_url, api_key="x")
        up.error_status, up.error_headers = 429, {"retry-after": "7"}
        assert up.wait_for_disconnects(1, timeout=2)

Endpoints: ``POST /v1/chat/completions`` (a ``chat.completion``, or with ``"stream": true``
``chat.completion.chunk`` SSE frames and ``data: [DONE]``; with ``stream_options.include_usage``
every chunk has ``"usage": null`` and a last chunk with ``"choices": []`` carries the usage),
``GET /v1/models``, ``POST /v1/embeddings`` (``fake_embedding`` of each input; ``dimensions``
and ``encoding_format="base64"`` honoured). Errors use OpenAI's envelope (``error_envelope``).
The reply is ``"fake:<model>:<last user message text>"`` unless the ``reply`` knob (a string,
or a function of the request body) says otherwise; a stream sends it in ``stream_chunks``
content chunks, then a ``finish_reason`` chunk (``"stop"``, or the ``finish_reason`` knob, e.g.
``"length"``). The ``tool_calls`` knob (a list of ``{"name": ..., "arguments": "<JSON
text>"[, "id": ...]}``, or a function of the request body returning one or None) makes the
model call functions: the answer's ``message.tool_calls`` (content null unless ``reply`` is
set too), finish reason ``tool_calls``; a stream sends any text first, then each call as a
first ``delta.tool_calls`` fragment (index, id, name) and its arguments in ``stream_chunks``
pieces (``testing.fake_chat`` has the frames). Usage counts words, unless the ``usage`` knob
(a dict) replaces it (an upstream reporting implausible counts).

Knobs are constructor keywords and attributes, settable from any thread at any time
(``configure()`` sets several atomically); a request reads them once, on arrival, and they act
in this order: ``require_api_key`` (every endpoint answers 401 without ``Authorization: Bearer
<key>``), ``latency_ms`` (delay before a POST response starts), ``hang`` (a POST is answered
never: until the client leaves or ``close()``), ``error_status``/``error_body``/``error_headers``
(every chat request gets that error), ``chunk_delay_ms`` (before each stream chunk but the
first), ``fail_after_chunks`` (a stream sends that many chunk frames, then the server closes
the connection mid-body).

``requests`` records chat and embeddings requests; ``disconnects`` counts requests whose client
closed (or half-closed) the connection before the response was complete, within milliseconds;
the fake's own closes (``fail_after_chunks``, ``close()``) do not count. HTTP/1.1, keep-alive,
request bodies need ``Content-Length``. Sockets have ``TCP_NODELAY``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import math
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from http import HTTPStatus
from typing import Any

from routekeeper.testing.fake_chat import (
    checked_calls,
    chunk_frames,
    completion,
    content_text,
    usage_of,
)

ReplyFn = Callable[[dict[str, Any]], str]
ToolCallsFn = Callable[[dict[str, Any]], "list[dict[str, str]] | None"]
_REASONS = {s.value: s.phrase for s in HTTPStatus}
_CODES = {401: "invalid_api_key", 404: "not_found", 429: "rate_limit_exceeded"}
_ROUTES = {"/v1/chat/completions": "POST", "/v1/embeddings": "POST", "/v1/models": "GET"}


@dataclass(frozen=True)
class RecordedRequest:
    """A request as received: header names lower-cased, ``body`` the parsed JSON (or None)."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass(eq=False)
class _Knobs:
    """The behaviour knobs and their defaults (see the module docstring)."""

    latency_ms: float = 0.0
    chunk_delay_ms: float = 0.0
    stream_chunks: int = 4
    error_status: int | None = None
    error_body: dict[str, Any] | None = None
    error_headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False
    fail_after_chunks: int | None = None
    require_api_key: str | None = None
    reply: str | ReplyFn | None = None
    tool_calls: list[dict[str, str]] | ToolCallsFn | None = None
    usage: dict[str, Any] | None = None
    finish_reason: str = "stop"


def error_envelope(status: int, message: str | None = None) -> dict[str, Any]:
    """OpenAI's error body for ``status`` (the default ``error_body``)."""
    kind = "server_error" if status >= 500 else "invalid_request_error"
    message = message or f"fake upstream error {status}"
    return {"error": {"message": message, "type": kind, "param": None, "code": _CODES.get(status)}}


def fake_embedding(text: str, dim: int) -> list[float]:
    """The deterministic, L2-normalised vector the fake returns for ``text``."""
    values: list[float] = []
    while len(values) < dim:
        digest = hashlib.sha256(f"{len(values)}:{text}".encode()).digest()
        values.extend(v / 32767.5 - 1.0 for v in struct.unpack(">16H", digest))
    norm = math.sqrt(sum(x * x for x in values[:dim])) or 1.0
    return [x / norm for x in values[:dim]]


class _Protocol(asyncio.StreamReaderProtocol):
    """asyncio's server stream protocol, plus ``lost``: set when the client closes or resets."""

    def __init__(self, up: FakeUpstream) -> None:
        self.lost = asyncio.Event()
        super().__init__(asyncio.StreamReader(), lambda r, w: up._serve(r, w, self.lost))

    def eof_received(self) -> bool | None:
        self.lost.set()
        return super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set()
        super().connection_lost(exc)


class _Exchange:
    """One request on a connection: its parsed head and body, and how to answer it."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, lost: asyncio.Event
    ) -> None:
        self.writer, self.lost, self._reader = writer, lost, reader
        self.method = self.path = ""
        self.headers: dict[str, str] = {}
        self.keep_alive = False
        self.body = b""

    async def read(self) -> None:
        head = await self._reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.method, target, version = lines[0].split(" ", 2)
        self.path = target.split("?", 1)[0]
        for line in filter(None, lines[1:]):
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()
        if "chunked" in self.headers.get("transfer-encoding", ""):
            raise ValueError("chunked request bodies are not supported")
        self.body = await self._reader.readexactly(int(self.headers.get("content-length", "0")))
        connection = self.headers.get("connection", "").lower()
        self.keep_alive = version == "HTTP/1.1" and connection != "close"

    async def sleep(self, seconds: float) -> bool:
        """Wait ``seconds``; True if the client left meanwhile."""
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await self.lost.wait()
        return self.lost.is_set()

    async def write(self, data: bytes) -> None:
        if not self.lost.is_set():
            self.writer.write(data)
            with contextlib.suppress(ConnectionError):
                await self.writer.drain()

    async def start(self, status: int, headers: dict[str, str]) -> None:
        reason = _REASONS.get(status, "Status")
        if not self.keep_alive:
            headers = {**headers, "connection": "close"}
        lines = [f"HTTP/1.1 {status} {reason}", *(f"{k}: {v}" for k, v in headers.items())]
        await self.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))


class FakeUpstream(_Knobs):
    """The fake OpenAI-compatible server; the module docstring states the contract.

    ``models`` is what ``GET /v1/models`` lists (chat and embeddings accept any model name);
    ``embedding_dim`` is the default vector size; ``port`` 0 picks a free one; ``remember``
    is how many of the latest requests ``requests`` keeps (None: all; a benchmark sending
    millions keeps none, or its memory and garbage collections grow all along). Keyword knobs
    set the initial knob values, which ``reset()`` restores.
    """

    def __init__(
        self,
        *,
        models: tuple[str, ...] | list[str] = ("fake-model",),
        embedding_dim: int = 16,
        port: int = 0,
        remember: int | None = None,
        **knobs: Any,
    ) -> None:
        self.models = list(models)
        self.remember = remember
        self.embedding_dim = embedding_dim
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._initial = _Knobs(**knobs)
        self.reset()
        self._count = 0
        self._conns: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}
        self._closing = False
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock.bind(("127.0.0.1", port))
        self.port: int = self._sock.getsockname()[1]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fake-upstream", daemon=True)

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>/v1``, the ``base_url`` for an OpenAI client."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of the chat and embeddings requests received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def disconnects(self) -> int:
        """How many requests lost their client before their response was complete."""
        with self._lock:
            return self._disconnects

    def wait_for_disconnects(self, n: int, timeout: float = 2.0) -> bool:
        """Block until ``disconnects >= n``; False if ``timeout`` seconds pass first."""
        with self._changed:
            return self._changed.wait_for(lambda: self._disconnects >= n, timeout)

    def wait_for_requests(self, n: int, timeout: float = 2.0) -> bool:
        """Block until ``len(requests) >= n``; False if ``timeout`` seconds pass first."""
        with self._changed:
            return self._changed.wait_for(lambda: len(self._requests) >= n, timeout)

    def configure(self, **knobs: Any) -> None:
        """Set several knobs at once; a request arriving meanwhile sees all or none."""
        unknown = set(knobs) - {f.name for f in fields(_Knobs)}
        if unknown:
            raise TypeError(f"unknown FakeUpstream knobs: {sorted(unknown)}")
        with self._lock:
            for name, value in knobs.items():
                setattr(self, name, value)

    def reset(self) -> None:
        """Forget requests and disconnects; knobs go back to the constructor's values."""
        self.configure(**{f.name: getattr(self._initial, f.name) for f in fields(_Knobs)})
        with self._lock:
            self._requests: deque[RecordedRequest] = deque(maxlen=self.remember)
            self._disconnects = 0

    def start(self) -> FakeUpstream:
        """Serve on a background thread; returns once the port accepts connections."""
        if self._thread.ident is not None:
            raise RuntimeError("a FakeUpstream starts only once")
        self._sock.listen(128)
        self._sock.setblocking(False)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the fake upstream did not start")
        return self

    def close(self) -> None:
        """Drop every connection (hung requests included), stop the thread, free the port."""
        self._closing = True
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed already
                loop.call_soon_threadsafe(stop.set)
        if self._thread.ident is not None:
            self._thread.join(timeout=5)
        self._sock.close()

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the server, on its own thread and event loop --------------------------------------

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(self._main())
        finally:
            self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Protocol(self), sock=self._sock)
        self._ready.set()
        if not self._closing:
            await self._stop.wait()
        server.close()
        await asyncio.sleep(0)  # connections accepted just now register themselves
        while self._conns:
            for task, writer in list(self._conns.items()):
                task.cancel()
                writer.transport.abort()
            await asyncio.gather(*self._conns, return_exceptions=True)

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, lost: asyncio.Event
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns[task] = writer
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                ex = _Exchange(reader, writer, lost)
                try:
                    await ex.read()
                    keep = await self._handle(ex)
                except (ValueError, EOFError, asyncio.LimitOverrunError, ConnectionError):
                    break
                except Exception as exc:  # e.g. a failing ``reply`` function
                    ex.keep_alive = False
                    await self._json(ex, 500, error_envelope(500, f"fake upstream: {exc!r}"))
                    break
                if not keep or not ex.keep_alive or ex.lost.is_set():
                    break
        except asyncio.CancelledError:  # close(); Python 3.11 logs a cancelled _serve task
            pass
        finally:
            writer.close()
            del self._conns[task]

    def _gone(self) -> bool:
        with self._changed:
            if not self._closing:
                self._disconnects += 1
                self._changed.notify_all()
        return False

    async def _json(
        self, ex: _Exchange, status: int, payload: Any, headers: dict[str, str] | None = None
    ) -> bool:
        if ex.lost.is_set():
            return self._gone()
        data = json.dumps(payload).encode()
        head = {"content-type": "application/json", "content-length": str(len(data))}
        await ex.start(status, {**head, **(headers or {})})
        await ex.write(data)
        return True

    async def _handle(self, ex: _Exchange) -> bool:
        """Answer one request; False if the connection must not serve another."""
        if ex.path not in _ROUTES:
            return await self._json(ex, 404, error_envelope(404, f"no route {ex.path}"))
        if ex.method != _ROUTES[ex.path]:
            return await self._json(ex, 405, error_envelope(405, "method not allowed"))
        body: Any = None
        with contextlib.suppress(ValueError):
            body = json.loads(ex.body or b"null")
        with self._changed:
            knobs = _Knobs(**{f.name: getattr(self, f.name) for f in fields(_Knobs)})
            if ex.method == "POST":
                self._requests.append(RecordedRequest(ex.method, ex.path, ex.headers, body))
                self._changed.notify_all()
            self._count += 1
            number = self._count
        key = knobs.require_api_key
        if key is not None and ex.headers.get("authorization") != f"Bearer {key}":
            return await self._json(ex, 401, error_envelope(401, "incorrect API key"))
        if ex.method == "GET":
            data = [
                {"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.models
            ]
            return await self._json(ex, 200, {"object": "list", "data": data})
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            message = "the body must be a JSON object with a string 'model'"
            return await self._json(ex, 400, error_envelope(400, message))
        if await ex.sleep(knobs.latency_ms / 1000):
            return self._gone()
        if knobs.hang:
            await ex.lost.wait()
            return self._gone()
        if ex.path == "/v1/embeddings":
            return await self._embeddings(ex, body)
        if knobs.error_status is not None:
            payload = knobs.error_body or error_envelope(knobs.error_status)
            return await self._json(ex, knobs.error_status, payload, knobs.error_headers)
        return await self._chat(ex, body, knobs, number)

    async def _chat(self, ex: _Exchange, body: dict[str, Any], knobs: _Knobs, number: int) -> bool:
        raw = body.get("messages")
        messages = [m for m in raw if isinstance(m, dict)] if isinstance(raw, list) else []
        users = [content_text(m.get("content")) for m in messages if m.get("role") == "user"]
        model: str = body["model"]
        wanted = knobs.tool_calls(body) if callable(knobs.tool_calls) else knobs.tool_calls
        calls = checked_calls(wanted, number)
        reply = knobs.reply
        text = reply(body) if callable(reply) else reply
        if text is None and not calls:
            text = f"fake:{model}:{''.join(users[-1:])}"
        finish = knobs.finish_reason
        if calls and finish == "stop":
            finish = "tool_calls"
        usage = usage_of(messages, text or "", calls)
        if knobs.usage is not None:
            usage = dict(knobs.usage)
        base = {
            "id": f"chatcmpl-fake{number}",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp",
        }
        if not body.get("stream"):
            return await self._json(ex, 200, completion(base, text, calls, finish, usage))
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage")
        frames = chunk_frames(
            base,
            text,
            calls,
            chunks=knobs.stream_chunks,
            finish_reason=finish,
            usage=usage if include_usage else None,
        )
        if ex.lost.is_set():
            return self._gone()
        headers = {"content-type": "text/event-stream", "cache-control": "no-cache"}
        await ex.start(200, {**headers, "transfer-encoding": "chunked"})
        limit = knobs.fail_after_chunks
        events = [b"data: " + json.dumps(f).encode() + b"\n\n" for f in frames[:limit]]
        for i, event in enumerate(events):
            if (i and await ex.sleep(knobs.chunk_delay_ms / 1000)) or ex.lost.is_set():
                return self._gone()
            await ex.write(b"%x\r\n%s\r\n" % (len(event), event))
        if limit is not None:
            return False  # _serve closes the connection mid-body
        if ex.lost.is_set():
            return self._gone()
        await ex.write(b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n")
        return True

    async def _embeddings(self, ex: _Exchange, body: dict[str, Any]) -> bool:
        inputs = body.get("input")
        if isinstance(inputs, str) or (
            isinstance(inputs, list) and inputs and isinstance(inputs[0], int)
        ):
            inputs = [inputs]
        if not isinstance(inputs, list) or not inputs:
            return await self._json(ex, 400, error_envelope(400, "'input' must be non-empty"))
        texts = [t if isinstance(t, str) else json.dumps(t) for t in inputs]
        dim = body.get("dimensions")
        dim = dim if isinstance(dim, int) and dim > 0 else self.embedding_dim
        data: list[dict[str, Any]] = []
        for index, text in enumerate(texts):
            vector: Any = fake_embedding(text, dim)
            if body.get("encoding_format") == "base64":
                vector = base64.b64encode(struct.pack(f"<{dim}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": vector})
        tokens = sum(len(t.split()) for t in texts)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        result = {"object": "list", "data": data, "model": body["model"], "usage": usage}
        return await self._json(ex, 200, result)
