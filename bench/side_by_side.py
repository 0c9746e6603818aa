"""Two versions of routekeeper side by side: a server from each source tree, both in front of
one fake upstream (in a process of its own), measured in alternating rounds of chat completions
and stored responses at the same concurrency, so that a slow minute of a shared machine hits
both alike.

    .venv/bin/python bench/side_by_side.py --a OLD/src --b src [--requests 2000] [--rounds 6]

``--a``/``--b``: a ``src`` directory each (``git worktree add /tmp/old <commit>`` gives the
older one); each server runs with it first on ``PYTHONPATH``. In a run with the same code on
both sides, on a busy 2-core host, the first-started server used 12 % more CPU per stored
response than the other, so a claim needs both orders: run it again with ``--a`` and ``--b``
swapped.

Prints one JSON line: per version, the median over rounds of requests per second and of
server CPU per request (the serve process tree, from ``/proc``) for each kind, and the median
of each round's stored/chat throughput ratio (the target of ``responses_chain.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from cpu_accounting import tree_cpu_seconds
from http_load import run
from upstream_process import UpstreamProcess, one_model_config

from routekeeper.testing import ServerProcess

KINDS = ("chat", "responses")


def _targets(url: str) -> dict[str, tuple[str, dict[str, Any]]]:
    return {
        "chat": (
            f"{url}/v1/chat/completions",
            {"model": "auto", "messages": [{"role": "user", "content": "benchmark me"}]},
        ),
        "responses": (f"{url}/v1/responses", {"model": "auto", "input": "benchmark me"}),
    }


def _measure(server: ServerProcess, kind: str, requests: int, concurrency: int) -> dict[str, float]:
    assert server.proc is not None
    target, body = _targets(server.url)[kind]
    before = tree_cpu_seconds(server.proc.pid)
    result = asyncio.run(run(target, body, requests=requests, concurrency=concurrency))
    cpu = tree_cpu_seconds(server.proc.pid) - before
    summary = result.summary()
    if summary["errors"]:
        raise SystemExit(f"{kind}: {summary['errors']} errors against {server.url}")
    return {"rps": summary["throughput_rps"], "cpu_ms_per_request": 1000 * cpu / requests}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", required=True, type=Path, help="a source tree (its src)")
    parser.add_argument("--b", required=True, type=Path, help="the other one")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    sources = {"a": args.a.resolve(), "b": args.b.resolve()}
    with (
        UpstreamProcess(models=["m"], stream_chunks=8, reply="a reply of fixed size") as upstream,
        tempfile.TemporaryDirectory(prefix="rk-side-by-side-") as tmp,
    ):
        path = one_model_config(Path(tmp), upstream.base_url)
        servers = {
            name: ServerProcess(
                workspace=Path(tmp) / f"ws-{name}", config=path, env={"PYTHONPATH": str(src)}
            )
            for name, src in sources.items()
        }
        try:
            for server in servers.values():
                server.start()
            for server in servers.values():  # warm-up
                for kind in KINDS:
                    _measure(server, kind, 300, args.concurrency)
            rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in servers}
            for r in range(args.rounds):
                names = list(servers) if r % 2 == 0 else list(reversed(servers))
                kinds = KINDS if r % 2 == 0 else tuple(reversed(KINDS))
                for name in names:
                    got = {
                        kind: _measure(servers[name], kind, args.requests, args.concurrency)
                        for kind in kinds
                    }
                    got["ratio"] = got["responses"]["rps"] / got["chat"]["rps"]
                    rounds[name].append(got)
        finally:
            for server in servers.values():
                server.stop_quietly()

    def median(values: list[float]) -> float:
        return round(statistics.median(values), 3)

    figures = {
        name: {
            "src": str(sources[name]),
            **{
                kind: {
                    field: median([got[kind][field] for got in done])
                    for field in ("rps", "cpu_ms_per_request")
                }
                for kind in KINDS
            },
            "throughput_ratio": median([got["ratio"] for got in done]),
            "ratios": [round(got["ratio"], 3) for got in done],
        }
        for name, done in rounds.items()
    }
    print(
        json.dumps(
            {
                "benchmark": "side_by_side",
                "requests": args.requests,
                "rounds": args.rounds,
                "concurrency": args.concurrency,
                **figures,
            }
        )
    )


if __name__ == "__main__":
    main()
