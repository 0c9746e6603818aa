"""Throughput of routekeeper (replay on, SQLite) in front of the fake upstream at concurrency
32, in both replay durability modes, against the fake upstream called directly, in the same
run, with the replay writer's group commit. The concurrency-1 figures (added p50, streaming
TTFB) and the CPU per request are measured with wrk by ``bench/http_throughput.py``.

    .venv/bin/python bench/proxy_overhead.py [--requests 2000] [--rounds 3]

Two servers run side by side on the same fake upstream, one per ``replay.durability``
(``acknowledged``: the last byte waits for the record's commit; ``batch``). For each scenario
(stream or not, concurrency 32) every target gets a warm-up, then the baseline and both
modes are measured in turn, ``--rounds`` times (the order rotates each round), so machine noise
hits all of them alike.

Prints one JSON line per scenario: the baseline's p50/p99 and req/s, and per mode its p50/p99,
req/s, added_p50_ms/added_p99_ms and throughput_ratio against the baseline of the same round,
``durable_fraction`` (responses whose ``x-routekeeper-replay-durable`` header was ``true``;
for a stream, what the server promised at its first byte) and ``replay``: what the server's
``GET /api/status`` replay counters moved by during the measured rounds (written, batches,
records_per_commit = written / batches, ack_timeout, dropped). All figures are medians across
rounds. A last line gives each server's replay status section after the whole run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from http_load import Result, run
from upstream_process import one_model_config

from routekeeper.router.services.trace import REPLAY_DURABLE_HEADER
from routekeeper.testing import FakeUpstream, ServerProcess

MODES = ("acknowledged", "batch")
WARMUP_REQUESTS = 200


@dataclass
class Target:
    name: str
    url: str
    model: str
    server: ServerProcess | None = None
    """None: the fake upstream itself (the baseline)."""

    def load(self, *, stream: bool, concurrency: int, requests: int) -> Result:
        body = {
            "model": self.model,
            "stream": stream,
            "messages": [{"role": "user", "content": "benchmark me"}],
        }
        return asyncio.run(
            run(
                self.url,
                body,
                requests=requests,
                concurrency=concurrency,
                header=REPLAY_DURABLE_HEADER,
            )
        )


def start_server(stack: contextlib.ExitStack, upstream: FakeUpstream, mode: str) -> Target:
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"rk-{mode}-")))
    path = one_model_config(tmp, upstream.base_url, replay={"durability": mode})
    server = stack.enter_context(ServerProcess(workspace=tmp / "ws", config=path))
    return Target(mode, f"{server.url}/v1/chat/completions", "auto", server)


def replay_status(target: Target, timeout: float = 10.0) -> dict[str, Any]:
    """A server's status replay section once nothing is queued (batch mode writes on a timer)."""
    server = target.server
    assert server is not None
    deadline = time.monotonic() + timeout
    while True:
        replay = server.component_status("router_replay")
        if replay["queued"] == 0 or time.monotonic() > deadline:
            return replay
        time.sleep(0.02)


def replay_moved(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    written = after["written"] - before["written"]
    batches = after["batches"] - before["batches"]
    return {
        "written": written,
        "batches": batches,
        "records_per_commit": round(written / batches, 2) if batches else None,
        "ack_timeout": after["ack_timeout"] - before["ack_timeout"],
        "dropped": {k: v - before["dropped"].get(k, 0) for k, v in after["dropped"].items()},
    }


def median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def figures(results: list[Result]) -> dict[str, Any]:
    rounds = [r.summary() for r in results]
    return {
        "p50_ms": median([r["p50_ms"] for r in rounds]),
        "p99_ms": median([r["p99_ms"] for r in rounds]),
        "throughput_rps": round(statistics.median(r["throughput_rps"] for r in rounds), 1),
        "errors": sum(r["errors"] for r in rounds),
    }


def versus(results: list[Result], baseline: list[Result]) -> dict[str, Any]:
    """A mode's figures, and what it adds to the baseline measured in the same round."""
    pairs = [(r.summary(), b.summary()) for r, b in zip(results, baseline, strict=True)]
    answered = sum(sum(r.header_values.values()) for r in results)
    durable = sum(r.header_values["true"] for r in results)
    return {
        **figures(results),
        "added_p50_ms": median([r["p50_ms"] - b["p50_ms"] for r, b in pairs]),
        "added_p99_ms": median([r["p99_ms"] - b["p99_ms"] for r, b in pairs]),
        "throughput_ratio": median([r["throughput_rps"] / b["throughput_rps"] for r, b in pairs]),
        "durable_fraction": round(durable / answered, 4) if answered else None,
    }


def scenario(
    targets: list[Target], *, stream: bool, concurrency: int, requests: int, rounds: int
) -> dict[str, Any]:
    for target in targets:
        target.load(stream=stream, concurrency=concurrency, requests=WARMUP_REQUESTS)
    modes = [t for t in targets if t.server is not None]
    before = {t.name: replay_status(t) for t in modes}
    results: dict[str, list[Result]] = {t.name: [] for t in targets}
    for i in range(rounds):
        for target in targets[i % len(targets) :] + targets[: i % len(targets)]:
            results[target.name].append(
                target.load(stream=stream, concurrency=concurrency, requests=requests)
            )
    baseline = results[targets[0].name]
    line: dict[str, Any] = {
        "benchmark": "proxy_overhead",
        "stream": stream,
        "concurrency": concurrency,
        "requests": requests,
        "rounds": rounds,
        "baseline": figures(baseline),
    }
    for target in modes:
        line[target.name] = {
            **versus(results[target.name], baseline),
            "replay": replay_moved(before[target.name], replay_status(target)),
        }
    return line


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000, help="per target and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        upstream = stack.enter_context(FakeUpstream(models=["m"], stream_chunks=8, remember=0))
        targets = [Target("baseline", f"{upstream.base_url}/chat/completions", "m")]
        targets += [start_server(stack, upstream, mode) for mode in MODES]
        for stream in (False, True):
            line = scenario(
                targets, stream=stream, concurrency=32, requests=args.requests, rounds=args.rounds
            )
            print(json.dumps(line), flush=True)
        status = {t.name: replay_status(t) for t in targets if t.server is not None}
        print(json.dumps({"benchmark": "proxy_overhead_replay_status", **status}), flush=True)


if __name__ == "__main__":
    main()
