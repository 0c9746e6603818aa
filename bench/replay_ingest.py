"""Replay records per second through the recorder (batched writer) vs a raw executemany of the
same rows in one transaction per batch, on SQLite and PostgreSQL, in the same run.

    .venv/bin/python bench/replay_ingest.py [--records 50000] [--postgres-dsn DSN]

Target: the recorder reaches at least half the raw rate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

from routekeeper.contract.ids import new_id
from routekeeper.contract.replay import LifecycleState, ReplayRecord, TerminalReason
from routekeeper.router.services.replay import FLUSH_BATCH, ReplayRecorder
from routekeeper.settings import load_settings
from routekeeper.storage.schema.replay import router_replay
from routekeeper.storage.state import StateStorage
from routekeeper.testing.backends import fresh_postgres_database, postgres_unavailable_reason

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def make(i: int) -> ReplayRecord:
    return ReplayRecord(
        id=new_id("rpl"),
        request_id=f"req_{i}",
        replica_id="rep_bench",
        endpoint="/v1/chat/completions",
        started_at=T0 + timedelta(milliseconds=i),
        requested_model="auto",
        selected_model="small",
        decision="default",
        stream=False,
        session_id=f"s{i % 100}",
        lifecycle_state=LifecycleState.COMPLETED,
        terminal_reason=TerminalReason.RESPONSE_COMPLETE,
        total_ms=12.5,
        prompt_tokens=30,
        completion_tokens=50,
        total_tokens=80,
    )


async def measure(settings, n: int) -> dict:
    storage = StateStorage(settings)
    await storage.open()
    try:
        await storage.migrate()
        db = storage.replay.db
        rows = [make(i) for i in range(n)]
        started = time.perf_counter()
        for start in range(0, n, FLUSH_BATCH):
            async with db.write() as conn:
                await conn.execute(
                    router_replay.insert(),
                    [
                        {
                            **asdict(r),
                            "lifecycle_state": str(r.lifecycle_state),
                            "terminal_reason": str(r.terminal_reason),
                            "id": new_id("rpl"),
                        }
                        for r in rows[start : start + FLUSH_BATCH]
                    ],
                )
        raw = n / (time.perf_counter() - started)
        recorder = ReplayRecorder(
            storage.replay, enabled=True, queue_max=n + 1, flush_interval_ms=10
        )
        recorder.begin()
        started = time.perf_counter()
        for i, record in enumerate(rows):  # what requests do: start, then finish
            recorder.start(record)
            recorder.finish(record.id, total_ms=13.0)
            if i % FLUSH_BATCH == 0:
                await asyncio.sleep(0)  # requests interleave with the writer
        await recorder.stop()
        through = n / (time.perf_counter() - started)
        assert not any(recorder.dropped.values()), recorder.dropped
        stored = await db.count_rows(router_replay)
        assert stored == 2 * n, (stored, recorder.written, recorder.queued)
        return {
            "raw_executemany_rps": round(raw),
            "recorder_rps": round(through),
            "ratio": round(through / raw, 3),
        }
    finally:
        await storage.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=50_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = load_settings(None, workspace=Path(tmp) / "ws")
        result = asyncio.run(measure(sqlite, args.records))
        print(
            json.dumps(
                {
                    "benchmark": "replay_ingest",
                    "backend": "sqlite",
                    "records": args.records,
                    **result,
                }
            ),
            flush=True,
        )
    reason = postgres_unavailable_reason()
    if reason:
        print(json.dumps({"benchmark": "replay_ingest", "backend": "postgres", "skipped": reason}))
        return
    with fresh_postgres_database() as dsn:
        pg = load_settings(
            None,
            workspace=Path(tempfile.gettempdir()),
            overrides={"state": {"backends": {"main": {"type": "postgres", "dsn": dsn}}}},
        )
        result = asyncio.run(measure(pg, args.records))
        print(
            json.dumps(
                {
                    "benchmark": "replay_ingest",
                    "backend": "postgres",
                    "records": args.records,
                    **result,
                }
            )
        )


if __name__ == "__main__":
    main()
