"""``serve --workers N``: a supervisor process and N worker processes serving one port.

The supervisor binds the port once and starts each worker as ``routekeeper serve --worker
SPEC`` with the socket's descriptor inherited. On Linux that socket is bound with
``SO_REUSEPORT`` and does not listen: it holds the port while workers come and go (``port: 0``
means one port for all), and each worker listens on a socket of its own bound to the same
address, so the kernel spreads new connections over the workers (on one shared accept queue,
whichever worker woke first took a burst of connections almost whole). The price: connections
still queued on a killed worker's socket are reset with it. Elsewhere the supervisor's socket
listens and every worker accepts on it.

Each worker is a replica of its own (own id, liveness lock, heartbeat, phases, replay writer)
on the same state. The supervisor holds no state and writes nothing: it starts workers,
replaces one that exits (a new replica; the dead one is recorded ``crashed`` by the crash
sweep of a survivor or of the replacement), backs off when a worker keeps failing before it
becomes ready and gives up after ``MAX_START_FAILURES`` such failures in a row, and forwards
SIGTERM/SIGINT so every worker drains as one replica does. Workers die with the supervisor:
``prctl(PR_SET_PDEATHSIG, SIGKILL)`` on Linux, and a thread that polls ``getppid()`` everywhere.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType

from routekeeper.runtime.worker_board import WorkerBoard

log = logging.getLogger("routekeeper.supervisor")

MAX_START_FAILURES = 5
BACKOFF_FIRST_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 30.0
# How long the supervisor waits beyond server.graceful_timeout_seconds for drained workers to
# exit before it kills them (each bounds its own shutdown by that budget).
EXIT_MARGIN_SECONDS = 5.0
PARENT_POLL_SECONDS = 0.2
TICK_SECONDS = 0.05
LISTEN_BACKLOG = 2048
PR_SET_PDEATHSIG = 1
# Linux spreads the connections of a port over the listening SO_REUSEPORT sockets bound to it.
BALANCED = sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


# -- the worker's side ---------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker is handed: ``socket_fd,board_fd,slot,slots,parent_pid``."""

    socket_fd: int
    board_fd: int
    slot: int
    slots: int
    parent_pid: int

    def encode(self) -> str:
        return f"{self.socket_fd},{self.board_fd},{self.slot},{self.slots},{self.parent_pid}"

    @classmethod
    def decode(cls, text: str) -> WorkerSpec:
        fields = [int(part) for part in text.split(",")]
        if len(fields) != 5:
            raise ValueError(f"a worker spec has 5 fields, not {len(fields)}")
        return cls(*fields)


def die_with_parent(parent_pid: int, *, pdeathsig: bool = True) -> None:
    """End this process with SIGKILL as soon as ``parent_pid`` (the supervisor) is gone, so a
    SIGKILL of the supervisor takes its workers down too (and a kill-and-restart test kills
    every replica it started). ``pdeathsig=False`` leaves only the ``getppid()`` poll (what
    runs where ``prctl`` does not exist)."""
    if pdeathsig and sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before the line above
        os.kill(os.getpid(), signal.SIGKILL)
    threading.Thread(
        target=_watch_parent, args=(parent_pid,), name="parent watch", daemon=True
    ).start()


def _watch_parent(parent_pid: int) -> None:
    while True:
        time.sleep(PARENT_POLL_SECONDS)
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), signal.SIGKILL)


def inherited_socket(fd: int) -> socket.socket:
    """The socket this worker accepts on. Where the supervisor holds the port with a bound
    ``SO_REUSEPORT`` socket (Linux), a listening socket of this worker's own on the same
    address (the kernel spreads new connections over the workers' sockets); else the
    supervisor's listening socket itself (its family is read from the descriptor)."""
    held = socket.socket(fileno=fd)
    if not BALANCED:
        return held
    own = socket.socket(held.family, held.type, held.proto)
    try:
        own.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        own.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if held.family == socket.AF_INET6:
            own.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        own.bind(held.getsockname())
        own.listen(LISTEN_BACKLOG)
    except OSError:
        own.close()
        raise
    finally:
        held.close()
    return own


# -- the supervisor ------------------------------------------------------------------------


def bind(host: str, port: int) -> socket.socket:
    """The supervisor's socket on the port, inheritable: bound with ``SO_REUSEPORT`` and not
    listening where the workers listen on sockets of their own (:data:`BALANCED`), else the
    one listening socket of every worker. Raises OSError."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if BALANCED:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        if not BALANCED:
            sock.listen(LISTEN_BACKLOG)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


@dataclass
class _Slot:
    index: int
    proc: subprocess.Popen[bytes] | None = None
    failures: int = 0
    start_at: float = 0.0
    exit_codes: list[int] = field(default_factory=list)


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class Supervisor:
    """Runs ``workers`` worker processes until SIGTERM/SIGINT (exit 0 when every worker
    drained and exited 0) or until a worker failed ``MAX_START_FAILURES`` times in a row
    before becoming ready (exit 1, after the others drained)."""

    def __init__(
        self,
        *,
        workers: int,
        sock: socket.socket,
        command: Callable[[WorkerSpec], list[str]],
        graceful_timeout_seconds: float,
    ) -> None:
        self.sock = sock
        self.command = command
        self.graceful_timeout = graceful_timeout_seconds
        self.board_fd = WorkerBoard.create(workers)
        self.board = WorkerBoard(self.board_fd, workers)
        self.slots = [_Slot(i) for i in range(workers)]
        self._signals: list[int] = []
        self._forwarded = 0
        self._stop_deadline: float | None = None
        self.gave_up: str | None = None

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        try:
            while True:
                now = time.monotonic()
                for slot in self.slots:
                    if slot.proc is not None and (code := slot.proc.poll()) is not None:
                        self._exited(slot, code, now)
                if self._stopping:
                    self._forward_signals(now)
                    if not self._live():
                        break
                    if self._stop_deadline is not None and now > self._stop_deadline:
                        self._kill_remaining("did not exit within server.graceful_timeout_seconds")
                        break
                else:
                    for slot in self.slots:
                        if slot.proc is None and now >= slot.start_at:
                            self._start(slot)
                time.sleep(TICK_SECONDS)
        finally:
            # Reached with workers left only when the loop above raised.
            self._kill_remaining("is still running while the supervisor stops on an error")
            os.close(self.board_fd)
            self.sock.close()
        codes = [code for slot in self.slots for code in slot.exit_codes[-1:]]
        if self.gave_up is None and all(code == 0 for code in codes):
            log.info("every worker drained; exiting")
            return 0
        return 1

    @property
    def _stopping(self) -> bool:
        return bool(self._signals) or self.gave_up is not None

    def _live(self) -> list[_Slot]:
        return [slot for slot in self.slots if slot.proc is not None]

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        self._signals.append(sig)

    def _forward_signals(self, now: float) -> None:
        """SIGTERM to every worker, once per signal received (a second one makes the workers
        skip server.drain_seconds, as for one replica)."""
        wanted = max(1, len(self._signals))
        while self._forwarded < wanted:
            self._forwarded += 1
            if self._stop_deadline is None:
                self._stop_deadline = now + self.graceful_timeout + EXIT_MARGIN_SECONDS
                log.info("draining %d worker(s)", len(self._live()))
            for slot in self._live():
                assert slot.proc is not None
                with contextlib.suppress(ProcessLookupError):
                    slot.proc.send_signal(signal.SIGTERM)

    def _kill_remaining(self, why: str) -> None:
        for slot in self._live():
            assert slot.proc is not None
            log.error("worker %d (pid %d) %s; killing it", slot.index, slot.proc.pid, why)
            slot.proc.kill()
            slot.exit_codes.append(slot.proc.wait())
            slot.proc = None

    def _start(self, slot: _Slot) -> None:
        spec = WorkerSpec(
            self.sock.fileno(), self.board_fd, slot.index, len(self.slots), os.getpid()
        )
        self.board.clear(slot.index)
        slot.proc = subprocess.Popen(
            self.command(spec), pass_fds=(self.sock.fileno(), self.board_fd)
        )
        log.info("worker %d started (pid %d)", slot.index, slot.proc.pid)

    def _exited(self, slot: _Slot, code: int, now: float) -> None:
        assert slot.proc is not None
        pid = slot.proc.pid
        slot.proc = None
        slot.exit_codes.append(code)
        try:
            entry = self.board.read(slot.index)
        except ValueError as exc:
            log.warning(
                "worker %d: its slot on the worker board is unreadable: %s", slot.index, exc
            )
            entry = None
        self.board.clear(slot.index)
        name = f"worker {slot.index} (pid {pid}"
        name += f", replica {entry['replica_id']})" if entry else ")"
        if self._stopping:
            log.info("%s exited: %s", name, describe_exit(code))
            return
        if entry is not None:  # it had become ready: replace it at once
            slot.failures = 0
            slot.start_at = now
            log.warning("%s exited: %s; starting a replacement", name, describe_exit(code))
            return
        slot.failures += 1
        if slot.failures >= MAX_START_FAILURES:
            self.gave_up = (
                f"worker {slot.index} failed {slot.failures} times in a row before it became "
                f"ready (last: {describe_exit(code)}; its log is above); giving up"
            )
            log.error("%s; stopping the other workers", self.gave_up)
            return
        delay = min(BACKOFF_MAX_SECONDS, BACKOFF_FIRST_SECONDS * 2 ** (slot.failures - 1))
        slot.start_at = now + delay
        log.warning(
            "%s exited before it was ready: %s; starting it again in %.1fs (%d of %d)",
            name,
            describe_exit(code),
            delay,
            slot.failures,
            MAX_START_FAILURES,
        )
