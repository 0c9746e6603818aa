"""Added latency and throughput of routekeeper (replay on) in front of the fake upstream,
against the fake upstream called directly, in the same run.

    .venv/bin/python bench/proxy_overhead.py [--requests 2000]

Prints one JSON line per scenario (stream or not, concurrency 1 and 32): baseline and proxied
p50/p99 latency, the added p50/p99 and the throughput ratio. Target: added p50 <= 2 ms at
concurrency 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from http_load import run

from routekeeper.testing import FakeUpstream, ServerProcess


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, FakeUpstream(models=["m"], stream_chunks=8) as up:
        config = {
            "models": [
                {"name": "m", "backend": {"type": "openai", "base_url": up.base_url, "model": "m"}}
            ],
            "decisions": [{"name": "default", "model": "m"}],
            "server": {"log_level": "warning"},
        }
        path = Path(tmp) / "c.yaml"
        path.write_text(yaml.safe_dump(config))
        with ServerProcess(workspace=Path(tmp) / "ws", config=path) as server:
            for stream in (False, True):
                for concurrency in (1, 32):
                    body = {
                        "model": "m",
                        "stream": stream,
                        "messages": [{"role": "user", "content": "benchmark me"}],
                    }
                    routed = {**body, "model": "auto"}
                    n = args.requests
                    asyncio.run(
                        run(
                            f"{up.base_url}/chat/completions",
                            body,
                            requests=200,
                            concurrency=concurrency,
                        )
                    )
                    asyncio.run(
                        run(
                            f"{server.url}/v1/chat/completions",
                            routed,
                            requests=200,
                            concurrency=concurrency,
                        )
                    )
                    base = asyncio.run(
                        run(
                            f"{up.base_url}/chat/completions",
                            body,
                            requests=n,
                            concurrency=concurrency,
                        )
                    ).summary()
                    proxied = asyncio.run(
                        run(
                            f"{server.url}/v1/chat/completions",
                            routed,
                            requests=n,
                            concurrency=concurrency,
                        )
                    ).summary()
                    print(
                        json.dumps(
                            {
                                "benchmark": "proxy_overhead",
                                "stream": stream,
                                "concurrency": concurrency,
                                "baseline": base,
                                "routekeeper": proxied,
                                "added_p50_ms": round(proxied["p50_ms"] - base["p50_ms"], 3),
                                "added_p99_ms": round(proxied["p99_ms"] - base["p99_ms"], 3),
                                "throughput_ratio": round(
                                    proxied["throughput_rps"] / base["throughput_rps"], 3
                                ),
                            }
                        ),
                        flush=True,
                    )


if __name__ == "__main__":
    main()
