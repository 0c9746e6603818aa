"""A TCP proxy for fault-injection tests: put it between routekeeper and a database, then
``freeze()`` it (connections stay open, nothing is forwarded: a hung peer), ``cut()`` it
(every connection is closed and new ones are refused: an unreachable peer) and ``restore()``
it. Runs in a background thread; only for loopback addresses in tests."""

from __future__ import annotations

import selectors
import socket
import threading
from types import TracebackType
from urllib.parse import urlsplit, urlunsplit


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, *, listen_host: str = "127.0.0.1"):
        self.target = (target_host, target_port)
        self._listener = socket.create_server((listen_host, 0))
        self._listener.setblocking(False)
        self.host, self.port = self._listener.getsockname()[:2]
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._frozen = threading.Event()
        self._cut = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tcp-proxy", daemon=True)

    def dsn_for(self, dsn: str) -> str:
        """``dsn`` with its host and port replaced by this proxy's (connect through it)."""
        parts = urlsplit(dsn)
        user = parts.netloc.rpartition("@")[0]
        netloc = f"{user}@{self.host}:{self.port}" if user else f"{self.host}:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    def start(self) -> TcpProxy:
        self._thread.start()
        return self

    def freeze(self) -> None:
        """Keep every connection open but forward nothing (reads pile up unanswered)."""
        self._frozen.set()

    def cut(self) -> None:
        """Close every connection and refuse new ones until restore()."""
        self._cut.set()
        self._close_pairs()

    def restore(self) -> None:
        self._cut.clear()
        self._frozen.clear()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._close_pairs()
        self._listener.close()

    def _close_pairs(self) -> None:
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for a, b in pairs:
            for sock in (a, b):
                try:
                    sock.close()
                except OSError:
                    pass

    def _run(self) -> None:
        while not self._stop.is_set():
            self._accept()
            if self._frozen.is_set() or self._cut.is_set():
                self._stop.wait(0.02)
                continue
            self._pump()

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except (BlockingIOError, OSError):
            return
        if self._cut.is_set():
            client.close()
            return
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()
            return
        for sock in (client, upstream):
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self._pairs.append((client, upstream))

    def _pump(self) -> None:
        with self._lock:
            pairs = list(self._pairs)
        if not pairs:
            self._stop.wait(0.01)
            return
        selector = selectors.DefaultSelector()
        try:
            for a, b in pairs:
                try:
                    selector.register(a, selectors.EVENT_READ, (a, b))
                    selector.register(b, selectors.EVENT_READ, (b, a))
                except (ValueError, OSError):
                    continue
            for key, _ in selector.select(timeout=0.02):
                src, dst = key.data
                if self._frozen.is_set() or self._cut.is_set():
                    return
                try:
                    data = src.recv(65536)
                    if not data:
                        raise ConnectionError
                    dst.setblocking(True)
                    dst.sendall(data)
                    dst.setblocking(False)
                except OSError:
                    self._drop(src, dst)
        finally:
            selector.close()

    def _drop(self, a: socket.socket, b: socket.socket) -> None:
        with self._lock:
            self._pairs = [p for p in self._pairs if a not in p]
        for sock in (a, b):
            try:
                sock.close()
            except OSError:
                pass

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
