"""A real ``routekeeper worker`` subprocess (job slots without HTTP) for end-to-end tests, on
the same workspace and configuration as the ``serve`` processes it shares state with:

    with WorkerProcess(workspace=ws, config=cfg) as worker:
        ...                 # it claims queued jobs
        worker.kill()       # SIGKILL: its jobs are requeued by the replicas that remain
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import Any

from routekeeper.testing.server import ServerError, ServerProcess

READY = re.compile(r"worker replica (rep_\w+) ready")


class WorkerProcess(ServerProcess):
    """One ``routekeeper worker`` process at a time; ``replica_id`` is the replica it runs
    as (known once ready)."""

    def __init__(
        self,
        *,
        workspace: Path,
        config: Path | None = None,
        concurrency: int | None = None,
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
    ) -> None:
        super().__init__(workspace=workspace, config=config, env=env, log_path=log_path)
        if log_path is None:
            self.log_path = self.workspace.parent / f"worker-{self.port}.log"
        self.concurrency = concurrency
        self.replica_id: str | None = None
        self._seen = 0

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "routekeeper", "worker", "--workspace", str(self.workspace)]
        if self.config is not None:
            cmd += ["--config", str(self.config)]
        if self.concurrency is not None:
            cmd += ["--concurrency", str(self.concurrency)]
        return cmd

    def start(self, *, wait_ready: bool = True, timeout: float = 30.0, **_: Any) -> WorkerProcess:
        self._seen = len(READY.findall(self.log()))
        super().start(wait_ready=wait_ready, timeout=timeout, _port_retries=0)
        return self

    def wait_ready(self, *, timeout: float = 30.0) -> dict[str, Any]:
        """Wait until this start's replica logged that it is ready (migrated, recovered,
        its job slots running)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise ServerError(
                    f"worker exited with {self.exit_code()} before ready\n{self.log_tail()}"
                )
            found = READY.findall(self.log())
            if len(found) > self._seen:
                self.replica_id = found[-1]
                return {"replica_id": self.replica_id}
            time.sleep(0.05)
        raise ServerError(f"worker not ready after {timeout}s\n{self.log_tail()}")
