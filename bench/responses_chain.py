"""Stored responses through routekeeper (SQLite, replay acknowledged) in front of the fake
upstream (in a process of its own): the latency of a turn at chain depth 1 and 50, and
stored-response throughput against chat completions through the same router, in the same run.

    .venv/bin/python bench/responses_chain.py [--samples 60] [--requests 2000] [--rounds 5]

The fake upstream's reply has the same size at every depth (a fixed text, not the echo's
transcript), so a deeper turn only costs what routekeeper does more: reading the chain's
context (one statement whatever the depth) and sending a longer prompt. Depth d means the
turn's ``previous_response_id`` has d - 1 responses before it; each sample is a sibling turn on
the same chain, depth-1 and depth-50 samples alternating so machine noise hits both alike.
Throughput: ``--requests`` non-streaming creates (``store: true``, no chain) against as many
chat completions at concurrency 8, alternating each of ``--rounds`` rounds (a round of 400
lasted half a second, and single rounds then ranged from 0.55 to 0.81 within one run).

Prints one JSON line: p50/p99 per depth and ``depth50_over_depth1`` (target <= 1.3), per
round req/s of both and the median ``throughput_ratio`` (target >= 0.7).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from http_load import run
from upstream_process import UpstreamProcess, one_model_config

from routekeeper.testing import ServerProcess

REPLY = "a reply of the same size at every depth"


def _create(client: httpx.Client, text: str, previous: str | None) -> tuple[str, float]:
    body: dict[str, Any] = {"model": "auto", "input": text}
    if previous is not None:
        body["previous_response_id"] = previous
    started = time.perf_counter()
    response = client.post("/v1/responses", json=body)
    elapsed = (time.perf_counter() - started) * 1000
    response.raise_for_status()
    return str(response.json()["id"]), elapsed


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))], 3)


def depth_latency(url: str, samples: int) -> dict[str, Any]:
    with httpx.Client(base_url=url, timeout=30) as client:
        root, _ = _create(client, "turn 0", None)
        tip = root
        for turn in range(1, 49):
            tip, _ = _create(client, f"turn {turn}", tip)
        for _ in range(10):  # warm-up
            _create(client, "warm", root)
            _create(client, "warm", tip)
        shallow: list[float] = []
        deep: list[float] = []
        for i in range(samples):
            shallow.append(_create(client, f"sample {i}", None)[1])  # depth 1
            deep.append(_create(client, f"sample {i}", tip)[1])  # depth 50
    d1, d50 = statistics.median(shallow), statistics.median(deep)
    return {
        "depth1": {"p50_ms": round(d1, 3), "p99_ms": _pct(shallow, 0.99)},
        "depth50": {"p50_ms": round(d50, 3), "p99_ms": _pct(deep, 0.99)},
        "depth50_over_depth1": round(d50 / d1, 3),
    }


def throughput(url: str, requests: int, rounds: int) -> dict[str, Any]:
    chat = {"model": "auto", "messages": [{"role": "user", "content": "benchmark me"}]}
    stored = {"model": "auto", "input": "benchmark me"}
    asyncio.run(run(f"{url}/v1/chat/completions", chat, requests=100, concurrency=8))
    asyncio.run(run(f"{url}/v1/responses", stored, requests=100, concurrency=8))
    per_round = []
    for r in range(rounds):
        order = [
            ("chat", f"{url}/v1/chat/completions", chat),
            ("responses", f"{url}/v1/responses", stored),
        ]
        if r % 2:
            order.reverse()
        figures: dict[str, Any] = {}
        for name, target, body in order:
            result = asyncio.run(run(target, body, requests=requests, concurrency=8))
            figures[name] = result.summary()
        figures["throughput_ratio"] = round(
            figures["responses"]["throughput_rps"] / figures["chat"]["throughput_rps"], 3
        )
        per_round.append(figures)
    return {
        "rounds": per_round,
        "throughput_ratio": statistics.median(r["throughput_ratio"] for r in per_round),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=60)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with (
        # In a process of its own: in this one, its thread and the load generator's loop
        # would take turns on one interpreter lock, which slows both alike.
        UpstreamProcess(models=["m"], stream_chunks=8, reply=REPLY) as upstream,
        tempfile.TemporaryDirectory(prefix="rk-responses-") as tmp,
    ):
        path = one_model_config(Path(tmp), upstream.base_url)
        with ServerProcess(workspace=Path(tmp) / "ws", config=path) as server:
            latency = depth_latency(server.url, args.samples)
            rate = throughput(server.url, args.requests, args.rounds)
    print(
        json.dumps(
            {
                "benchmark": "responses_chain",
                "backend": "sqlite",
                "latency": latency,
                "throughput_concurrency_8": rate,
                "targets": {"depth50_over_depth1": 1.3, "throughput_ratio": 0.7},
            }
        )
    )


if __name__ == "__main__":
    main()
