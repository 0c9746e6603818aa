"""A real ``routekeeper serve`` subprocess for end-to-end tests.

    with ServerProcess(workspace=tmp_path / "ws", config=cfg) as server:
        httpx.get(f"{server.url}/api/status")
        server.terminate()          # SIGTERM, waits for exit
        server.start()              # again, on the same state

With ``workers=N`` it runs ``serve --workers N``: a supervisor and N worker replicas on one
port. The process runs in a process group of its own, so :meth:`kill` and
:meth:`stop_quietly` SIGKILL the whole tree at once and wait until no process of it runs
(no worker is left behind); :meth:`terminate` signals the supervisor alone, which drains its
workers.

Every failure message carries the tail of the server's log.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx


def pid_running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (dead, waiting to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: whether a signal can reach it
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def group_pids(pgid: int) -> list[int]:
    """Running (non-zombie) processes of process group ``pgid`` (Linux: read from /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            pids.append(int(entry.name))
    return pids


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerError(AssertionError):
    """The server did not do what the test waited for; the message has its log."""


class ServerProcess:
    """One ``routekeeper serve`` process at a time on a fixed workspace/config/port."""

    def __init__(
        self,
        *,
        workspace: Path,
        config: Path | None = None,
        port: int | None = None,
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
        workers: int | None = None,
        api_key: str | None = None,
    ) -> None:
        self.workspace = Path(workspace)
        self.config = config
        self._fixed_port = port is not None
        self.port = port or free_port()
        self.env = env or {}
        self.log_path = log_path or self.workspace.parent / f"serve-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None
        self.workers = workers
        self.api_key = api_key
        """An admin key the helpers below send (``auth.mode: api_key``); given, or set once
        made."""

    def _admin_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "routekeeper", "serve", "--workspace", str(self.workspace)]
        if self.config is not None:
            cmd += ["--config", str(self.config)]
        if self.workers is not None:
            cmd += ["--workers", str(self.workers)]
        return [*cmd, "--host", "127.0.0.1", "--port", str(self.port)]

    def start(
        self, *, wait_ready: bool = True, timeout: float = 30.0, _port_retries: int = 3
    ) -> ServerProcess:
        if self.proc is not None and self.proc.poll() is None:
            raise ServerError(f"server on port {self.port} is already running")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        env = {**os.environ, **self.env}
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== start {' '.join(self.command())}\n".encode())
            self.proc = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # its own process group: the whole tree can be killed
            )
        self.returncode = None
        if wait_ready:
            try:
                self.wait_ready(timeout=timeout)
            except ServerError:
                # free_port() cannot reserve the port; another process may have taken it.
                this_run = self.log()[offset:].lower()
                if (
                    self._fixed_port
                    or _port_retries == 0
                    or "address already in use" not in this_run
                ):
                    raise
                self.port = free_port()
                return self.start(timeout=timeout, _port_retries=_port_retries - 1)
        return self

    def wait_ready(self, *, timeout: float = 30.0) -> dict[str, Any]:
        """Poll /readyz until 200 (with workers: until every worker is ready, so that any
        request may land on any of them); raise with the log if the process exits or time
        runs out."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise ServerError(
                    f"server exited with {self.exit_code()} before ready\n{self.log_tail()}"
                )
            try:
                response = httpx.get(f"{self.url}/readyz", timeout=2.0)
                if response.status_code == 200 and not self._workers_ready():
                    last = f"not every one of {self.workers} workers is ready yet"
                elif response.status_code == 200:
                    body: dict[str, Any] = response.json()
                    return body
                else:
                    last = f"{response.status_code} {response.text}"
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.05)
        raise ServerError(f"server not ready after {timeout}s (last: {last})\n{self.log_tail()}")

    def _workers_ready(self) -> bool:
        """Every worker ready: the one answering, and as many on the worker board (a worker
        publishes there from ready on)."""
        if not self.workers or self.workers < 2:
            return True
        response = httpx.get(f"{self.url}/api/status", headers=self._admin_headers(), timeout=5.0)
        if response.status_code != 200:
            return False
        body = response.json()
        seen = max(len(row.get("workers") or {}) for row in body["surfaces"])
        return bool(body["phase"] == "ready" and seen == self.workers)

    def list_all(self, path: str, **params: Any) -> list[dict[str, Any]]:
        """Every item of an ``/api`` list (``/api/replay``, ...), following its cursor."""
        items: list[dict[str, Any]] = []
        after: str | None = None
        while True:
            query = {"limit": 100, **params, **({"after": after} if after else {})}
            response = httpx.get(
                f"{self.url}{path}", params=query, headers=self._admin_headers(), timeout=30
            )
            if response.status_code != 200:
                raise ServerError(f"GET {path} -> {response.status_code}: {response.text}")
            page = response.json()
            items += page["data"]
            if not page["has_more"]:
                return items
            after = page["last_id"]

    def surface_status(self, surface: str) -> dict[str, Any]:
        """The surface's row of ``/api/status`` (``component`` holds what its background
        component reports, e.g. the replay writer's counters)."""
        response = httpx.get(f"{self.url}/api/status", headers=self._admin_headers(), timeout=30)
        if response.status_code != 200:
            raise ServerError(f"GET /api/status -> {response.status_code}: {response.text}")
        for row in response.json()["surfaces"]:
            if row["name"] == surface:
                found: dict[str, Any] = row
                return found
        raise ServerError(f"/api/status has no surface {surface!r}")

    def component_status(self, surface: str) -> dict[str, Any]:
        component: dict[str, Any] | None = self.surface_status(surface)["component"]
        if component is None:
            raise ServerError(f"surface {surface!r} reports no component")
        return component

    def wait_flushed(self, surface: str = "router_replay", *, timeout: float = 10.0) -> None:
        """Wait until the surface's writer has nothing queued: every record it accepted
        so far is committed (instead of sleeping longer than its flush interval). With
        workers, every worker's writer, each as reported after this call began."""
        began = time.time()
        deadline = time.monotonic() + timeout
        while True:
            row = self.surface_status(surface)
            reports = row.get("workers") or {"": {**row["component"], "as_of": None}}
            waiting = {
                replica: report["queued"]
                for replica, report in reports.items()
                if report["queued"]
                or (
                    report["as_of"] is not None
                    and datetime.fromisoformat(report["as_of"]).timestamp() < began
                )
            }
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise ServerError(
                    f"{surface}: records still queued (or not reported since) after "
                    f"{timeout}s: {waiting}\n{self.log_tail()}"
                )
            time.sleep(0.02)

    def exit_code(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def wait_exit(self, timeout: float = 30.0) -> int:
        if self.proc is None:
            raise ServerError("server was never started")
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ServerError(f"server did not exit within {timeout}s\n{self.log_tail()}") from None
        return self.returncode

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait for the process to exit; returns its exit code."""
        return self._signal(signal.SIGTERM, timeout)

    def kill(self) -> int:
        """SIGKILL: the process (every process of its tree) gets no chance to write
        anything. Returns once none of them runs."""
        if self.proc is None:
            raise ServerError("server was never started")
        self._kill_group()
        return self.wait_exit(10.0)

    def _kill_group(self) -> None:
        assert self.proc is not None
        pgid = self.proc.pid  # start_new_session: the group is named after the process
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while (left := group_pids(pgid)) and time.monotonic() < deadline:
            time.sleep(0.01)
        if left:
            raise ServerError(f"processes {left} of the server's group outlived SIGKILL")

    def _signal(self, sig: signal.Signals, timeout: float) -> int:
        if self.proc is None:
            raise ServerError("server was never started")
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.wait_exit(timeout)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "--- server log (tail) ---\n" + "\n".join(self.log().splitlines()[-lines:])

    def stop_quietly(self) -> None:
        """SIGKILL the whole tree if anything of it still runs (test teardown)."""
        if self.proc is not None and (self.proc.poll() is None or group_pids(self.proc.pid)):
            self._kill_group()

    def __enter__(self) -> ServerProcess:
        if self.proc is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_quietly()
