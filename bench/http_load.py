"""A small keep-alive HTTP/1.1 load generator on raw asyncio streams (httpx's async pool is
itself the bottleneck at these rates). Used by the benchmarks only."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class Result:
    latencies_ms: list[float]
    elapsed_s: float
    errors: int
    header_values: Counter[str] = field(default_factory=Counter)
    """How many responses carried each value of the header ``run`` was asked to count."""

    def summary(self) -> dict[str, float]:
        ordered = sorted(self.latencies_ms)

        def pct(p: float) -> float:
            return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))], 3)

        return {
            "requests": len(ordered),
            "errors": self.errors,
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
            "throughput_rps": round(len(ordered) / self.elapsed_s, 1),
        }


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    status_line = await reader.readline()
    status = int(status_line.split()[1])
    headers = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif "chunked" in headers.get("transfer-encoding", ""):
        while True:
            size = int((await reader.readline()).strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status, headers


async def run(
    url: str, body: dict, *, requests: int, concurrency: int, header: str | None = None
) -> Result:
    """``header``: a (lower-case) response header whose values to count (absent: ``""``)."""
    parts = urlsplit(url)
    payload = json.dumps(body).encode()
    head = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    ).encode()
    latencies: list[float] = []
    errors = 0
    values: Counter[str] = Counter()
    remaining = requests

    async def worker() -> None:
        nonlocal remaining, errors
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        try:
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                writer.write(head + payload)
                status, headers = await _read_response(reader)
                latencies.append((time.perf_counter() - started) * 1000)
                errors += status != 200
                if header is not None:
                    values[headers.get(header, "")] += 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Result(latencies, time.perf_counter() - started, errors, values)
