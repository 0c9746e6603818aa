"""CPU per upstream request of the HTTP client alone: httpx (as routekeeper used it, with
``sniffio`` importable, i.e. without the failed import on every request) against aiohttp (the
client routekeeper uses, ``routekeeper.upstream.client``), on the same fake upstream in the
same run.

    .venv/bin/python bench/upstream_client.py [--requests 5000] [--concurrency 32] [--rounds 3]

The fake upstream runs on its own thread; the figure is the CPU time of the client's thread
(``time.thread_time``, the event loop) per request, so the fake's own work is not counted.
Also measured: the same with 1 and 256 pooled connections, to show whether a request's cost
grows with the pool. Prints one JSON line; medians across interleaved rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable

import httpx

from routekeeper.testing import FakeUpstream
from routekeeper.upstream.client import HttpClient, encode_json

BODY = {"model": "m", "messages": [{"role": "user", "content": "benchmark me"}]}


async def _load(call: Callable[[], Awaitable[None]], requests: int, concurrency: int) -> float:
    remaining = requests

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await call()

    started = time.thread_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (time.thread_time() - started) * 1000 / requests


async def with_httpx(url: str, requests: int, concurrency: int, pool: int) -> float:
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=100)
    async with httpx.AsyncClient(limits=limits, follow_redirects=False) as client:

        async def call() -> None:
            response = await client.post(url, json=BODY, headers={"accept": "application/json"})
            json.loads(response.content)

        await _load(call, pool, pool)  # open `pool` connections first
        return await _load(call, requests, concurrency)


async def with_aiohttp(url: str, requests: int, concurrency: int, pool: int) -> float:
    client = HttpClient()
    try:

        async def call() -> None:
            async with client.session.post(
                url,
                data=encode_json(BODY),
                headers={"content-type": "application/json", "accept": "application/json"},
            ) as response:
                json.loads(await response.read())

        await _load(call, pool, pool)
        return await _load(call, requests, concurrency)
    finally:
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    clients = {"httpx": with_httpx, "aiohttp": with_aiohttp}
    results: dict[str, list[float]] = {}
    with FakeUpstream(models=["m"], remember=0) as up:
        url = f"{up.base_url}/chat/completions"
        for i in range(args.rounds):
            for name, fn in list(clients.items())[i % 2 :] + list(clients.items())[: i % 2]:
                for pool in (args.concurrency, 1, 256):
                    concurrency = args.concurrency if pool != 1 else 1
                    key = f"{name}_c{concurrency}_pool{pool}"
                    cpu = asyncio.run(fn(url, args.requests, concurrency, pool))
                    results.setdefault(key, []).append(cpu)
    line = {
        "benchmark": "upstream_client",
        "requests": args.requests,
        "rounds": args.rounds,
        "cpu_ms_per_request": {k: round(statistics.median(v), 4) for k, v in results.items()},
    }
    c = args.concurrency
    line["httpx_over_aiohttp"] = round(
        statistics.median(results[f"httpx_c{c}_pool{c}"])
        / statistics.median(results[f"aiohttp_c{c}_pool{c}"]),
        2,
    )
    print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
