"""Time from starting `routekeeper serve` to /readyz 200 on a workspace with 1M replay records
(a few left in flight by a "crashed" replica) vs an empty workspace, in the same run.

    .venv/bin/python bench/restart_ready.py [--records 1000000] [--runs 3]

Target: under 2 s, and at most 1.5x the empty workspace.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from routekeeper.contract.ids import new_id
from routekeeper.contract.replay import LifecycleState, ReplayRecord, TerminalReason
from routekeeper.settings import load_settings
from routekeeper.storage.state import StateStorage
from routekeeper.testing import ServerProcess

T0 = datetime(2026, 1, 1, tzinfo=UTC)


async def fill(workspace: Path, n: int) -> None:
    storage = StateStorage(load_settings(None, workspace=workspace))
    await storage.open()
    try:
        await storage.migrate()
        for start in range(0, n, 10_000):
            batch = []
            for i in range(start, min(n, start + 10_000)):
                in_flight = i >= n - 5
                batch.append(
                    ReplayRecord(
                        id=new_id("rpl", now_ms=1_760_000_000_000 + i),
                        request_id=f"req_{i}",
                        replica_id="rep_gone" if in_flight else f"rep_{i % 9}",
                        endpoint="/v1/chat/completions",
                        started_at=datetime.now(UTC) - timedelta(seconds=n - i),
                        requested_model="auto",
                        selected_model="small",
                        decision="default",
                        stream=False,
                        lifecycle_state=LifecycleState.IN_PROGRESS
                        if in_flight
                        else LifecycleState.COMPLETED,
                        terminal_reason=None if in_flight else TerminalReason.RESPONSE_COMPLETE,
                        total_ms=float(i % 500),
                        session_id=f"s{i % 1000}",
                    )
                )
            await storage.replay.write_batch(batch, [])
    finally:
        await storage.close()


def time_to_ready(workspace: Path, runs: int) -> list[float]:
    times = []
    server = ServerProcess(workspace=workspace)
    for _ in range(runs):
        started = time.perf_counter()
        server.start()
        times.append(time.perf_counter() - started)
        server.terminate()
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        empty, full = Path(tmp) / "empty", Path(tmp) / "full"
        asyncio.run(fill(empty, 0))
        started = time.perf_counter()
        asyncio.run(fill(full, args.records))
        fill_s = time.perf_counter() - started
        base = time_to_ready(empty, args.runs)
        loaded = time_to_ready(full, args.runs)
        print(
            json.dumps(
                {
                    "benchmark": "restart_ready",
                    "backend": "sqlite",
                    "records": args.records,
                    "fill_seconds": round(fill_s, 1),
                    "empty_ready_s": [round(t, 3) for t in base],
                    "full_ready_s": [round(t, 3) for t in loaded],
                    "empty_median_s": round(statistics.median(base), 3),
                    "full_median_s": round(statistics.median(loaded), 3),
                    "ratio": round(statistics.median(loaded) / statistics.median(base), 3),
                }
            )
        )


if __name__ == "__main__":
    main()
