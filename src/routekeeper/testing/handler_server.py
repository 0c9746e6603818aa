"""A local HTTP/1.1 server that answers each request with a function of it: the test seam for
what an upstream sends on the wire when ``FakeUpstream``'s knobs do not make it (odd SSE
framing, a body that is not JSON, a slow answer).

    def handler(request: Seen) -> Reply:
        return Reply(200, b'data: {"a": 1}\\n\\ndata: [DONE]\\n\\n')

    with HandlerServer(handler) as server:      # 127.0.0.1:<free port>, own threads
        ... f"{server.url}/v1" ...
        assert server.seen[0].json()["model"] == "m"

Every answer has a ``Content-Length``; ``Reply.delay`` waits before answering (a timeout).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Seen:
    """One request as it arrived (header names in lower case)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    peer: tuple[str, int]
    """The client's address and port: requests on one kept-alive connection share it."""

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes | str | dict[str, Any] | list[Any] = b""
    """Bytes or text as they are; a dict or list as JSON."""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    """Seconds to wait before answering."""

    def encoded(self) -> tuple[bytes, dict[str, str]]:
        headers = dict(self.headers)
        if isinstance(self.body, dict | list):
            headers.setdefault("content-type", "application/json")
            return json.dumps(self.body).encode(), headers
        if isinstance(self.body, str):
            return self.body.encode(), headers
        return self.body, headers


class HandlerServer:
    def __init__(self, handler: Callable[[Seen], Reply]) -> None:
        self.handler = handler
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        owner = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                request = Seen(
                    self.command,
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length),
                    (self.client_address[0], self.client_address[1]),
                )
                with owner._lock:
                    owner.seen.append(request)
                reply = owner.handler(request)
                if reply.delay:
                    time.sleep(reply.delay)
                body, headers = reply.encoded()
                self.send_response(reply.status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except OSError:  # the client left (e.g. it timed out)
                    self.close_connection = True

            do_GET = do_POST = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="handler-server", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> HandlerServer:
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread.ident is not None:
            self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> HandlerServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()
