"""The replay writer (``batch`` mode, the example's SQLite storage) while the event loop is
saturated the way ``routekeeper serve`` is at full load, without HTTP: what it writes, in how
many transactions, and what it drops.

    .venv/bin/python bench/replay_busy_loop.py [--seconds 10] [--rate 2800] [--per-round 32]
        [--request-cpu-us 300]

Simulated requests arrive at ``--rate`` per second; the loop handles ``--per-round`` of them
per round, each burning ``--request-cpu-us`` of CPU in Python (the server's own work per
request) before it starts and finishes its record. Between rounds the loop polls its
selector, as a server loop does. A writer that keeps up writes (nearly) every record with
``dropped.queue_full`` at 0; one that cannot grows its batches and drops. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from replay_records import chat_record, completed

from routekeeper.router.services.replay import ReplayRecorder
from routekeeper.settings import load_settings
from routekeeper.storage.state import StateStorage

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "routekeeper.yaml"


def burn(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


async def run(args: argparse.Namespace, workspace: Path) -> dict[str, object]:
    settings = load_settings(EXAMPLE, workspace=workspace)
    storage = StateStorage(settings)
    await storage.open()
    try:
        await storage.migrate()
        replay = settings.replay
        recorder = ReplayRecorder(
            storage.replay,
            enabled=True,
            queue_max=replay.queue_max,
            flush_interval_ms=replay.flush_interval_ms,
            durability="batch",
        )
        sizes: list[int] = []
        write_batch = storage.replay.write_batch

        async def counted(inserts, updates, **kw):  # type: ignore[no-untyped-def]
            sizes.append(len(inserts) + len(updates))
            return await write_batch(inserts, updates, **kw)

        storage.replay.write_batch = counted  # type: ignore[method-assign]
        recorder.begin()
        loop = asyncio.get_running_loop()
        started = loop.time()
        requests = 0
        in_flight: list[str] = []
        while loop.time() - started < args.seconds:
            due = int((loop.time() - started) * args.rate)
            for _ in range(min(args.per_round, due - requests)):
                burn(args.request_cpu_us / 1e6)
                record = chat_record()
                recorder.start(record)
                in_flight.append(record.id)
                requests += 1
            # the requests of the previous round finish in this one (a record written while
            # in flight is finished by an update, as in the server)
            finishing, in_flight = in_flight[: -args.per_round], in_flight[-args.per_round :]
            for record_id in finishing:
                recorder.finish(record_id, **completed())
            await asyncio.sleep(0)
        elapsed = loop.time() - started
        at_end = recorder.status()
        stop_started = time.perf_counter()
        await recorder.stop()
        return {
            "benchmark": "replay_busy_loop",
            "seconds": round(elapsed, 2),
            "requests": requests,
            "rate": round(requests / elapsed, 1),
            "at_end": {k: at_end[k] for k in ("queued", "written", "batches", "dropped")},
            "largest_batch": max(sizes, default=0),
            "batches": len(sizes),
            "stop_seconds": round(time.perf_counter() - stop_started, 2),
            "dropped_total": sum(recorder.dropped.values()),
        }
    finally:
        await storage.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=2800.0, help="requests per second")
    parser.add_argument("--per-round", type=int, default=32, help="requests per loop round")
    parser.add_argument("--request-cpu-us", type=float, default=300.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rk-bench-busy-") as tmp:
        print(json.dumps(asyncio.run(run(args, Path(tmp) / "ws"))), flush=True)


if __name__ == "__main__":
    main()
