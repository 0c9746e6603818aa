"""Job events from commit to SSE client: 5 jobs written at once (the built-in ``count`` kind,
one ``job.progress`` event per step, in the job slots of one ``routekeeper serve``) with 10
clients on ``GET /api/jobs/{id}/stream`` per job. Steps raise the write rate: the first paces
~100 events/s across the 5 jobs, the last writes as fast as the runner can. Each step reports
the events written per second and the delivery latency p50/p99 (client receipt time minus the
event's ``occurred_at``, set inside the transaction that commits it: commit-to-client plus
the commit itself, an upper bound). The maximum sustained rate is the highest written rate of a
step whose p99 stays within the target (250 ms) with every client getting every event.
Baseline, same run, same database: the raw insert rate of the same rows (``job_events``, one
transaction per row, no job row lock or fencing).

    .venv/bin/python bench/jobs_events.py [--seconds 5] [--postgres DSN] [--redis URL]

Prints one JSON line. The figures are noisy on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import yaml
from sqlalchemy import func, select

from routekeeper.contract.jobs import JobEventKind, JobStatus
from routekeeper.jobs.evaluation.metrics import percentile
from routekeeper.settings import load_settings
from routekeeper.storage.schema.jobs import job_events
from routekeeper.storage.state import StateStorage
from routekeeper.testing import ServerProcess, shared_postgres_state

TARGET_P99_MS = 250.0
JOBS = 5
CLIENTS = 10
# Milliseconds each job sleeps between steps: 40 ms paces ~20 events/s per job (~100 in all
# with the write itself, ~10 ms; the step reports the rate it reached); 0 writes as fast as
# the runner can.
DELAYS_MS = (40, 10, 3, 0)
WARMUP_SECONDS = 1.0


def parse_time(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC).timestamp()


class Client:
    """One SSE reader of one job: what it received, with when."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.connected_at = float("inf")
        self.received: list[tuple[int, float, float]] = []
        """(seq, occurred_at, received_at), wall-clock seconds."""

    async def read(self, http: httpx.AsyncClient) -> None:
        async with http.stream("GET", f"/api/jobs/{self.job_id}/stream") as answer:
            answer.raise_for_status()
            self.connected_at = time.time()
            async for line in answer.aiter_lines():
                if not line.startswith("data:"):
                    continue
                now = time.time()
                event = json.loads(line[5:])
                self.received.append((event["seq"], parse_time(event["occurred_at"]), now))


async def one_step(url: str, delay_ms: int, seconds: float, clients_per_job: int) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=JOBS * clients_per_job + 10)
    async with httpx.AsyncClient(base_url=url, timeout=None, limits=limits) as http:
        params = {"to": 10_000_000, "delay_ms": delay_ms, "checkpoint_every": 10_000_000}
        ids = []
        for _ in range(JOBS):
            answer = await http.post("/api/jobs", json={"kind": "count", "params": params})
            answer.raise_for_status()
            ids.append(answer.json()["id"])
        clients = [Client(job_id) for job_id in ids for _ in range(clients_per_job)]
        readers = [asyncio.create_task(c.read(http)) for c in clients]
        started = time.time()
        await asyncio.sleep(seconds + WARMUP_SECONDS)
        ended = time.time()
        for job_id in ids:
            (await http.post(f"/api/jobs/{job_id}/cancel")).raise_for_status()
        await asyncio.wait_for(asyncio.gather(*readers), timeout=60)
    window = (max(started + WARMUP_SECONDS, *(c.connected_at for c in clients)), ended)
    latencies = sorted(
        (received - occurred) * 1000
        for c in clients
        for _, occurred, received in c.received
        if window[0] <= occurred <= window[1]
    )
    written = {
        (c.job_id, seq)
        for c in clients
        for seq, occurred, _ in c.received
        if window[0] <= occurred <= window[1]
    }
    per_job: dict[str, set[int]] = {}
    for job_id, seq in written:
        per_job.setdefault(job_id, set()).add(seq)
    # Each client of a job must have every event of the window its job wrote.
    missing = sum(
        len(per_job.get(c.job_id, set()) - {s for s, _, _ in c.received}) for c in clients
    )
    span = window[1] - window[0]
    return {
        "delay_ms": delay_ms,
        "written_per_s": round(len(written) / span, 1) if span > 0 else None,
        "delivered": len(latencies),
        "missing": missing,
        "p50_ms": _ms(percentile(latencies, 50)),
        "p99_ms": _ms(percentile(latencies, 99)),
        "max_ms": _ms(latencies[-1] if latencies else None),
    }


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


async def raw_insert_rate(config: Path, workspace: Path, seconds: float) -> float:
    """Rows of ``job_events`` like the runner's progress events, one transaction each."""
    storage = StateStorage(load_settings(config, workspace=workspace))
    await storage.open()
    try:
        db = storage.database_for("job_events")
        async with db.read() as conn:
            # One job of this run (a reused database also holds earlier runs' jobs), its
            # rows numbered after every row it has.
            job_id = (
                (await conn.execute(job_events.select().order_by(job_events.c.job_id.desc())))
                .first()
                .job_id
            )
            top = (
                await conn.execute(
                    select(func.max(job_events.c.seq)).where(job_events.c.job_id == job_id)
                )
            ).scalar_one()
        n, began = 0, time.perf_counter()
        while time.perf_counter() - began < seconds:
            row = {
                "job_id": job_id,
                "tenant_id": "default",
                "seq": top + 1 + n,
                "kind": JobEventKind.PROGRESS.value,
                "status": JobStatus.RUNNING.value,
                "attempt": 1,
                "occurred_at": datetime.now(UTC),
                "data": {"done": n, "total": 10_000_000, "unit": "steps", "message": None},
            }
            async with db.write() as conn:
                await conn.execute(job_events.insert().values(**row))
            n += 1
        return n / (time.perf_counter() - began)
    finally:
        await storage.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="Measured seconds per step.")
    parser.add_argument("--postgres", metavar="DSN", help="Shared mode on this database.")
    parser.add_argument("--redis", metavar="URL", help="Wake readers through Redis pub/sub.")
    parser.add_argument(
        "--clients", type=int, default=CLIENTS, help="SSE clients per job (the target: 10)."
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workspace = Path(tmp) / "ws"
        config: dict[str, Any] = {
            "jobs": {"concurrency": JOBS},
            "models": [{"name": "echo", "backend": {"type": "echo"}}],
            "decisions": [{"name": "default", "model": "echo"}],
        }
        if args.postgres:
            config["state"] = shared_postgres_state(args.postgres)
        if args.redis:
            config["redis"] = {"url": args.redis}
        path = Path(tmp) / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        with ServerProcess(workspace=workspace, config=path) as server:
            steps = [
                asyncio.run(one_step(server.url, d, args.seconds, args.clients)) for d in DELAYS_MS
            ]
        baseline = asyncio.run(raw_insert_rate(path, workspace, min(args.seconds, 3.0)))
    sustained = [
        s["written_per_s"]
        for s in steps
        if s["p99_ms"] is not None and s["p99_ms"] <= TARGET_P99_MS and s["missing"] == 0
    ]
    best = max(sustained, default=None)
    paced = steps[0]
    print(
        json.dumps(
            {
                "bench": "jobs_events",
                "backend": "postgres" if args.postgres else "sqlite",
                "wakeups": "redis" if args.redis else ("listen" if args.postgres else "local"),
                "jobs": JOBS,
                "clients_per_job": args.clients,
                "paced": paced,
                "steps": steps,
                "max_sustained_per_s": best,
                "raw_insert_per_s": round(baseline, 1),
                "ratio_max_sustained_to_raw": round(best / baseline, 3) if best else None,
                "target_p99_ms": TARGET_P99_MS,
                "paced_p99_within_target": paced["p99_ms"] is not None
                and paced["p99_ms"] <= TARGET_P99_MS,
            }
        )
    )


if __name__ == "__main__":
    main()
