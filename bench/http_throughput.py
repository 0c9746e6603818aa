"""Added latency, throughput and CPU per request of ``routekeeper serve`` over HTTP, with wrk,
against the fake upstream (in a process of its own) called directly in the same run.

    .venv/bin/python bench/http_throughput.py [--rounds 3] [--seconds 5] [--durable-seconds 60]
        [--workers 2] [--workers-rounds 5] [--serve-arg=--some-flag ...]

The servers run the signals and decisions of ``examples/routekeeper.yaml`` (replay on, SQLite,
``synchronous: FULL``) with every model's backend pointed at the fake upstream, at the default
log level: one per ``replay.durability`` (``acknowledged``, ``batch``) with one worker, and one
``acknowledged`` server started with ``--workers N`` when ``routekeeper serve --help`` offers
that option (otherwise its figures are ``null`` with the reason). ``--serve-arg`` is passed to
every ``serve`` command as it is.

Figures (medians over ``--rounds`` interleaved rounds; the order of the targets rotates each
round, so machine noise hits them alike):

- ``c1``: wrk, one connection, non-streaming: p50/p99 per target and ``added_p50_ms`` (the
  server's p50 minus the baseline's of the same round) per durability mode.
- ``stream_ttfb``: time to the first body byte of a streaming request, one connection, this
  script's own HTTP/1.1 client (wrk measures whole responses), and ``added_p50_ms``.
- ``c32``: wrk, 32 connections: req/s per target, ``throughput_ratio`` against the baseline,
  and ``cpu_ms_per_request``: utime + stime of the serve process and all its descendants
  (``/proc/<pid>/stat``) over the measured interval, divided by the requests wrk completed
  (``serve_cores_busy``: the same CPU over the interval's seconds). Over the same interval,
  ``upstream_cpu_ms_per_request`` (the fake upstream, a process of its own) and
  ``wrk_cpu_ms_per_request``; ``ceiling_rps`` is the machine's cores over the three together
  (what no run on these cores can exceed at those costs) and ``share_of_ceiling`` the rate
  reached against it.
- ``workers``: ``--workers-rounds`` more c=32 runs of the one-worker ``acknowledged`` server
  and the multi-worker server, back to back in each round (their order alternates), and each
  round's req/s ratio: on a machine whose speed drifts over minutes (a shared host), the two
  runs of a round see the same machine, where the ``c32`` rounds put five other runs between
  them. ``targets`` gives both the ratio of the ``c32`` medians and the median of these.
- ``durable``: one ``--durable-seconds`` run at 32 connections per mode and for the
  multi-worker server, then the replay rows that run added to the database (after the
  writers have flushed) against wrk's count.
- ``replay`` in every figure of a server: what its runs added to the replay writer's counters
  on ``/api/status`` (summed over workers): ``written``, ``batches``, ``dropped`` by reason
  and ``dropped_total``, ``ack_timeout``, and the records still queued when the load stopped.
- ``setup``: the busy % of ``/proc/stat`` over 2 s before the run (the idle baseline; every
  figure also carries the busy % during its measurement: other load makes them noisy), and
  ``sqlite_commit_p50_ms``, one small write transaction on a SQLite file configured like the
  example's (WAL, ``synchronous: FULL``), and ``replay_ack_p50_ms``, one record through the
  replay recorder in ``acknowledged`` mode on the example's storage (start, finish, wait for
  the commit), without HTTP: together, what an acknowledged answer waits for beyond ``batch``.
- ``targets``: the figures the targets name, with the target and whether it was met;
  ``c32_N_workers_ratio`` adds ``ceiling_ratio``, the N-worker run's ``ceiling_rps`` against
  one worker's measured rate: below the target, the target was out of reach on this machine.

wrk comes from ``apt-get install -y wrk`` when it is missing; if that fails, only the c=1 and
TTFB figures are measured, with this script's own client, and the JSON says so.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from bench_keys import AUTH_ENV
from cpu_accounting import (
    CLK_TCK,
    ceiling,
    process_cpu_seconds,
    tree_cpu_seconds,
    waited_children_cpu_seconds,
)
from http_load import run as python_load
from replay_counters import added, replay_counters, settled_counters, summed
from replay_records import chat_record, completed
from upstream_process import UpstreamProcess

from routekeeper.router.services.replay import ReplayRecorder
from routekeeper.settings import load_settings
from routekeeper.storage.state import StateStorage
from routekeeper.testing import ServerProcess
from routekeeper.testing.tenancy import create_key

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "routekeeper.yaml"
MODES = ("acknowledged", "batch")
AUTH_SUFFIX = "_api_key"
"""The servers with ``auth.mode: api_key``: one per durability mode (``acknowledged_api_key``)."""
AUTH_ADDED_TARGET_MS = 0.2
"""``auth.mode: api_key`` may add at most this to the c=1 p50 (median of the rounds)."""
MESSAGES = [{"role": "user", "content": "benchmark me"}]
TTFB_REQUESTS = 300
WORKERS_RATIO_TARGET = 1.4
TARGETS = {
    "cpu_ms_per_request_c32_1_worker": 1.2,
    "added_p50_ms_c1_acknowledged": 1.5,
    "added_p50_ms_c1_batch": 1.0,
    "stream_ttfb_added_p50_ms": 1.5,
}


# -- the machine ----------------------------------------------------------------------------


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    with open("/proc/stat") as f:
        fields_ = [int(v) for v in f.readline().split()[1:]]
    idle = fields_[3] + fields_[4]  # idle + iowait
    total = sum(fields_[:8])  # guest time is already in user/nice
    return total - idle, total


def busy_percent(before: tuple[int, int], after: tuple[int, int]) -> float | None:
    total = after[1] - before[1]
    return round(100 * (after[0] - before[0]) / total, 1) if total else None


def idle_baseline(seconds: float = 2.0) -> float | None:
    before = cpu_times()
    time.sleep(seconds)
    return busy_percent(before, cpu_times())


def sqlite_commit_ms(directory: Path, commits: int = 200) -> float:
    """p50 of one small write transaction on a SQLite file as the example configures it (WAL,
    ``synchronous: FULL``): what an acknowledged answer waits for at least once."""
    path = directory / "commit.db"
    times: list[float] = []
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        for i in range(commits):
            started = time.perf_counter()
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO t (v) VALUES (?)", (f"row {i}",))
            db.execute("COMMIT")
            times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 3)


async def _replay_ack_ms(workspace: Path, records: int) -> float:
    settings = load_settings(
        EXAMPLE, workspace=workspace, overrides={"replay": {"durability": "acknowledged"}}
    )
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
            durability="acknowledged",
            ack_timeout_ms=60_000,
        )
        recorder.begin()
        times: list[float] = []
        for _ in range(records):
            started = time.perf_counter()
            record = chat_record()
            recorder.start(record)
            done = recorder.finish(record.id, **completed())
            if not await recorder.acknowledge(done):
                raise RuntimeError("a replay record was not acknowledged")
            times.append((time.perf_counter() - started) * 1000)
        await recorder.stop()
        return round(statistics.median(times), 3)
    finally:
        await storage.close()


def replay_ack_ms(directory: Path, records: int = 200) -> float:
    """p50 of one request's record through the replay recorder in ``acknowledged`` mode, one
    at a time, with the example's storage (start, finish, wait for the commit): what the
    acknowledged answer waits for beyond ``batch``, without HTTP."""
    return asyncio.run(_replay_ack_ms(directory / "ws", records))


# -- wrk ------------------------------------------------------------------------------------

WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = [==[%s]==]
wrk.headers["Content-Type"] = "application/json"
%s
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRKJSON {\\"requests\\":%%d,\\"duration_us\\":%%d,\\"p50_us\\":%%d,\\"p99_us\\":%%d," ..
    "\\"errors\\":%%d}\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""


def ensure_wrk() -> str | None:
    """None when wrk is there (installed now if it was missing), else why not."""
    if shutil.which("wrk"):
        return None
    try:
        done = subprocess.run(
            ["apt-get", "install", "-y", "wrk"], capture_output=True, text=True, timeout=300
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"wrk is missing and apt-get install -y wrk failed: {exc}"
    if done.returncode != 0 or not shutil.which("wrk"):
        return f"wrk is missing and apt-get install -y wrk failed: {done.stderr.strip()[-300:]}"
    return None


@dataclass
class Run:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_seconds: float | None = None
    """The serve process tree's."""
    upstream_cpu_seconds: float | None = None
    """The fake upstream process's."""
    wrk_cpu_seconds: float | None = None
    busy_percent: float | None = None
    machine_cpu_seconds: float | None = None
    """The busy CPU time of the whole machine (``/proc/stat``), every process counted."""
    replay: dict[str, Any] | None = None
    """What the run added to the server's replay counters (``replay_counters.added``)."""

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms_per_request(self) -> float | None:
        return self.per_request(self.cpu_seconds)

    def per_request(self, cpu_seconds: float | None) -> float | None:
        if cpu_seconds is None or not self.requests:
            return None
        return 1000 * cpu_seconds / self.requests


def wrk(
    url: str,
    body: dict[str, Any],
    *,
    connections: int,
    seconds: float,
    pid: int | None,
    upstream_pid: int | None = None,
    headers: dict[str, str] | None = None,
) -> Run:
    """wrk's figures with the CPU the serve tree (``pid``), the fake upstream process and
    wrk itself spent over the run."""
    extra = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in (headers or {}).items())
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT % (json.dumps(body), extra))
    try:
        cpu_before = tree_cpu_seconds(pid) if pid else None
        upstream_before = process_cpu_seconds(upstream_pid) if upstream_pid else None
        wrk_before = waited_children_cpu_seconds()
        machine_before = cpu_times()
        out = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{connections}",
                f"-d{max(1, round(seconds))}s",
                "--timeout",
                "10s",
                "-s",
                script.name,
                url,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        machine_after = cpu_times()
        machine = busy_percent(machine_before, machine_after)
        cpu = tree_cpu_seconds(pid) - cpu_before if pid and cpu_before is not None else None
        upstream_cpu = (
            process_cpu_seconds(upstream_pid) - upstream_before
            if upstream_pid and upstream_before is not None
            else None
        )
        wrk_cpu = waited_children_cpu_seconds() - wrk_before
    finally:
        os.unlink(script.name)
    match = re.search(r"^WRKJSON (.*)$", out, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    data = json.loads(match.group(1))
    return Run(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        errors=data["errors"],
        cpu_seconds=cpu,
        upstream_cpu_seconds=upstream_cpu,
        wrk_cpu_seconds=wrk_cpu,
        busy_percent=machine,
        machine_cpu_seconds=(machine_after[0] - machine_before[0]) / CLK_TCK,
    )


# -- this script's own client (TTFB; c=1 without wrk) -----------------------------------------


async def _ttfb(
    url: str, body: dict[str, Any], requests: int, headers: dict[str, str]
) -> list[float]:
    """Milliseconds from sending a streaming request to its first body byte, one connection."""
    parts = urlsplit(url)
    payload = json.dumps(body).encode()
    head = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
        + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        + "\r\n"
    ).encode()
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    times: list[float] = []
    try:
        for _ in range(requests):
            started = time.perf_counter()
            writer.write(head + payload)
            status = int((await reader.readline()).split()[1])
            chunked = False
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                if name.strip().lower() == "transfer-encoding" and "chunked" in value:
                    chunked = True
            if status != 200 or not chunked:
                raise RuntimeError(f"streaming request answered {status} (chunked: {chunked})")
            first = True
            while True:
                size = int((await reader.readline()).strip(), 16)
                if first and size:
                    times.append((time.perf_counter() - started) * 1000)
                    first = False
                await reader.readexactly(size + 2)
                if size == 0:
                    break
    finally:
        writer.close()
    return times


def ttfb(
    url: str, body: dict[str, Any], requests: int, headers: dict[str, str] | None = None
) -> Run:
    machine_before = cpu_times()
    started = time.perf_counter()
    times = sorted(asyncio.run(_ttfb(url, body, requests, headers or {})))
    return Run(
        requests=len(times),
        seconds=time.perf_counter() - started,
        p50_ms=times[len(times) // 2],
        p99_ms=times[min(len(times) - 1, int(0.99 * len(times)))],
        errors=0,
        busy_percent=busy_percent(machine_before, cpu_times()),
    )


def python_c1(url: str, body: dict[str, Any], seconds: float) -> Run:
    """c=1 with the script's own client when wrk is missing: as many requests as fit."""
    machine_before = cpu_times()
    probe = asyncio.run(python_load(url, body, requests=50, concurrency=1))
    per_second = max(1, int(50 / probe.elapsed_s))
    result = asyncio.run(
        python_load(url, body, requests=int(per_second * seconds), concurrency=1)
    ).summary()
    return Run(
        requests=int(result["requests"]),
        seconds=result["requests"] / result["throughput_rps"],
        p50_ms=result["p50_ms"],
        p99_ms=result["p99_ms"],
        errors=int(result["errors"]),
        busy_percent=busy_percent(machine_before, cpu_times()),
    )


# -- servers --------------------------------------------------------------------------------


class BenchServer(ServerProcess):
    """``routekeeper serve`` with extra arguments (``--workers N``, ``--serve-arg``)."""

    def __init__(self, *, extra_args: list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.extra_args = extra_args

    def command(self) -> list[str]:
        return [*super().command(), *self.extra_args]


@dataclass
class Target:
    name: str
    url: str
    model: str
    server: BenchServer | None = None
    """None: the fake upstream itself (the baseline)."""
    database: Path | None = None
    c1: list[Run] = field(default_factory=list)
    stream: list[Run] = field(default_factory=list)
    c32: list[Run] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    """Sent with every request (the member key of an ``api_key`` server)."""
    auth_c1: list[Run] = field(default_factory=list)
    paired: list[Run] = field(default_factory=list)
    """c=32 runs of the workers figure, each next to the other server's of its round."""

    @property
    def pid(self) -> int | None:
        return self.server.proc.pid if self.server and self.server.proc else None

    def body(self, *, stream: bool) -> dict[str, Any]:
        return {"model": self.model, "stream": stream, "messages": MESSAGES}


def example_config(upstream: UpstreamProcess, mode: str) -> dict[str, Any]:
    """The example's signals, decisions and storage; its models on the fake upstream."""
    config: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    config["models"] = [
        {
            "name": m["name"],
            "backend": {"type": "openai", "base_url": upstream.base_url, "model": m["name"]},
        }
        for m in config["models"]
    ]
    config.setdefault("replay", {})["durability"] = mode
    return config


def workers_option() -> str | None:
    """None when ``serve`` has ``--workers``, else why the multi-worker figures are null."""
    help_text = subprocess.run(
        [sys.executable, "-m", "routekeeper", "serve", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
    ).stdout
    if "--workers" in help_text:
        return None
    return "routekeeper serve has no --workers option in this version"


def start_server(
    stack: contextlib.ExitStack,
    upstream: UpstreamProcess,
    *,
    name: str,
    mode: str,
    extra_args: list[str],
    auth: bool = False,
) -> Target:
    """A server on its own workspace; ``auth``: with ``auth.mode: api_key``, a member key
    for the requests and an admin key for the harness's ``/api/status`` reads."""
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"rk-bench-{name}-")))
    path = tmp / "routekeeper.yaml"
    path.write_text(yaml.safe_dump(example_config(upstream, mode)))
    headers: dict[str, str] = {}
    admin = None
    if auth:
        _, member = create_key(tmp / "ws", path, "bench")
        _, admin = create_key(tmp / "ws", path, "bench", role="admin")
        headers["Authorization"] = f"Bearer {member}"
    server = BenchServer(
        workspace=tmp / "ws",
        config=path,
        extra_args=extra_args,
        env=AUTH_ENV if auth else None,
        api_key=admin,
    )
    stack.enter_context(server)
    # The example's sqlite backend: `state.db` in the workspace.
    return Target(
        name,
        f"{server.url}/v1/chat/completions",
        "auto",
        server,
        tmp / "ws" / "state.db",
        headers=headers,
    )


def replay_rows(database: Path) -> dict[str, int]:
    """Rows of router_replay by lifecycle state (read-only; the server keeps writing)."""
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        db.execute("PRAGMA busy_timeout = 10000")
        rows = db.execute(
            "SELECT lifecycle_state, count(*) FROM router_replay GROUP BY lifecycle_state"
        ).fetchall()
    return {state: count for state, count in rows}


def settled_rows(target: Target, timeout: float = 30.0) -> dict[str, int]:
    """The replay rows once the writer has nothing queued and no request of the run is still
    open (the ones wrk left in flight at its end finish as client_canceled)."""
    assert target.server is not None and target.database is not None
    deadline = time.monotonic() + timeout
    while True:
        target.server.wait_flushed(timeout=timeout)
        rows = replay_rows(target.database)
        if not rows.get("in_progress") or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


# -- figures --------------------------------------------------------------------------------


def med(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 3) if present else None


def summary(runs: list[Run], baseline: list[Run] | None = None) -> dict[str, Any] | None:
    if not runs:
        return None
    out: dict[str, Any] = {
        "p50_ms": med([r.p50_ms for r in runs]),
        "p99_ms": med([r.p99_ms for r in runs]),
        "rps": med([r.rps for r in runs]),
        "requests": sum(r.requests for r in runs),
        "errors": sum(r.errors for r in runs),
        "machine_busy_percent": med([r.busy_percent for r in runs]),
    }
    if any(r.cpu_seconds is not None for r in runs):
        out["cpu_ms_per_request"] = med([r.cpu_ms_per_request for r in runs])
        out["serve_cores_busy"] = med([r.cpu_seconds / r.seconds for r in runs if r.seconds])
    if any(r.upstream_cpu_seconds is not None for r in runs):
        out.update(cpu_ceiling(runs, out))
    if any(r.replay is not None for r in runs):
        out["replay"] = summed([r.replay for r in runs if r.replay is not None])
    if baseline:
        pairs = list(zip(runs, baseline, strict=True))
        out["added_p50_ms"] = med([r.p50_ms - b.p50_ms for r, b in pairs])
        out["added_p99_ms"] = med([r.p99_ms - b.p99_ms for r, b in pairs])
        out["throughput_ratio"] = med([r.rps / b.rps if b.rps else None for r, b in pairs])
    return out


def cpu_ceiling(runs: list[Run], out: dict[str, Any]) -> dict[str, Any]:
    """CPU per request of the fake upstream and of wrk next to the server's, and the rate the
    machine's cores allow at those costs (``cpu_accounting.ceiling``)."""
    costs = {
        "serve": out.get("cpu_ms_per_request"),
        "upstream": med([r.per_request(r.upstream_cpu_seconds) for r in runs]),
        "wrk": med([r.per_request(r.wrk_cpu_seconds) for r in runs]),
    }
    if "cpu_ms_per_request" not in out:  # the baseline: wrk against the fake upstream
        del costs["serve"]
    # What else kept the cores busy meanwhile (other load on a shared machine): the cores it
    # left are the ceiling that applied to this run.
    other = med(
        [
            (r.machine_cpu_seconds - sum(c for c in ours if c is not None)) / r.seconds
            for r in runs
            if r.machine_cpu_seconds is not None and r.seconds
            for ours in [(r.cpu_seconds, r.upstream_cpu_seconds, r.wrk_cpu_seconds)]
        ]
    )
    cores = os.cpu_count() or 1
    left = max(0.0, cores - other) if other is not None else None
    return {
        "upstream_cpu_ms_per_request": costs["upstream"],
        "wrk_cpu_ms_per_request": costs["wrk"],
        **ceiling(cores, out["rps"] or 0.0, costs),
        "other_load_cores": other,
        "ceiling_rps_cores_left": (ceiling(left, out["rps"] or 0.0, costs)["ceiling_rps"])
        if left
        else None,
    }


def counted(target: Target, measure: Callable[[], Run]) -> Run:
    """``measure()`` with what it added to the server's replay counters (settled before and
    after, so that each run is charged its own records) in ``Run.replay``."""
    if target.server is None:
        return measure()
    before = settled_counters(target.server)
    run = measure()
    queued_at_end = replay_counters(target.server)["queued"]
    run.replay = added(before, settled_counters(target.server), queued_at_end)
    return run


def rotate(items: list[Target], i: int) -> list[Target]:
    return items[i % len(items) :] + items[: i % len(items)]


def rounds(targets: list[Target], count: int, measure: Callable[[Target], None]) -> None:
    for i in range(count):
        for target in rotate(targets, i):
            measure(target)


def emit(line: dict[str, Any]) -> None:
    print(json.dumps({"benchmark": "http_throughput", **line}), flush=True)


@contextlib.contextmanager
def servers(
    args: argparse.Namespace, upstream: UpstreamProcess, workers_missing: str | None
) -> Iterator[list[Target]]:
    with contextlib.ExitStack() as stack:
        targets = [
            start_server(stack, upstream, name=mode, mode=mode, extra_args=args.serve_arg)
            for mode in MODES
        ]
        targets += [
            start_server(
                stack,
                upstream,
                name=mode + AUTH_SUFFIX,
                mode=mode,
                extra_args=args.serve_arg,
                auth=True,
            )
            for mode in MODES
        ]
        if workers_missing is None:
            targets.append(
                start_server(
                    stack,
                    upstream,
                    name=f"acknowledged_{args.workers}_workers",
                    mode="acknowledged",
                    extra_args=["--workers", str(args.workers), *args.serve_arg],
                )
            )
        yield targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="per wrk measurement")
    parser.add_argument(
        "--durable-seconds", type=float, default=60.0, help="the c=32 run whose records count"
    )
    parser.add_argument("--workers", type=int, default=2, help="the multi-worker server")
    parser.add_argument(
        "--workers-rounds",
        type=int,
        default=5,
        help="c=32 pairs of one worker and the multi-worker server, back to back",
    )
    parser.add_argument(
        "--auth-rounds", type=int, default=5, help="interleaved c=1 rounds, auth off and on"
    )
    parser.add_argument(
        "--serve-arg", action="append", default=[], help="passed to every serve command"
    )
    args = parser.parse_args()

    idle = idle_baseline()
    with tempfile.TemporaryDirectory(prefix="rk-bench-commit-") as tmp:
        commit_ms = sqlite_commit_ms(Path(tmp))
        ack_ms = replay_ack_ms(Path(tmp))
    wrk_missing = ensure_wrk()
    workers_missing = workers_option()
    emit(
        {
            "figure": "setup",
            "idle_busy_percent": idle,
            "cpus": os.cpu_count(),
            "sqlite_commit_p50_ms": commit_ms,
            "replay_ack_p50_ms": ack_ms,
            "wrk": None if wrk_missing else shutil.which("wrk"),
            "wrk_missing": wrk_missing,
            "workers": args.workers,
            "workers_missing": workers_missing,
            "rounds": args.rounds,
            "seconds": args.seconds,
            "serve_args": args.serve_arg,
        }
    )
    with contextlib.ExitStack() as stack:
        # Its own process: its CPU is counted apart from wrk's and the server's.
        upstream = stack.enter_context(UpstreamProcess(models=["small", "large"], stream_chunks=8))
        baseline = Target("baseline", f"{upstream.base_url}/chat/completions", "small")
        modes = stack.enter_context(servers(args, upstream, workers_missing))
        one_worker = [t for t in modes if t.name in MODES]
        multi = f"acknowledged_{args.workers}_workers"
        many = next((t for t in modes if t.name == multi), None)  # None: no --workers
        everyone = [baseline, *modes]

        def c1(target: Target) -> None:
            body = target.body(stream=False)
            if wrk_missing:
                run = counted(target, lambda: python_c1(target.url, body, args.seconds))
            else:
                run = counted(
                    target,
                    lambda: wrk(target.url, body, connections=1, seconds=args.seconds, pid=None),
                )
            target.c1.append(run)

        def stream(target: Target) -> None:
            body = target.body(stream=True)
            target.stream.append(counted(target, lambda: ttfb(target.url, body, TTFB_REQUESTS)))

        def measure_c32(target: Target) -> Run:
            body = target.body(stream=False)
            return counted(
                target,
                lambda: wrk(
                    target.url,
                    body,
                    connections=32,
                    seconds=args.seconds,
                    pid=target.pid,
                    upstream_pid=upstream.pid,
                    headers=target.headers,
                ),
            )

        def c32(target: Target) -> None:
            target.c32.append(measure_c32(target))

        # Warm-up: connections, caches, the SQLite file.
        for target in everyone:
            if not wrk_missing:
                wrk(
                    target.url,
                    target.body(stream=False),
                    connections=32,
                    seconds=1,
                    pid=None,
                    headers=target.headers,
                )
            ttfb(target.url, target.body(stream=True), 50, target.headers)

        rounds([baseline, *one_worker], args.rounds, c1)
        emit(
            {
                "figure": "c1",
                "client": "python" if wrk_missing else "wrk",
                "baseline": summary(baseline.c1),
                **{t.name: summary(t.c1, baseline.c1) for t in one_worker},
            }
        )
        emit(auth_figure(baseline, modes, args.auth_rounds, args.seconds, wrk_missing))
        rounds([baseline, *one_worker], args.rounds, stream)
        emit(
            {
                "figure": "stream_ttfb",
                "client": "python",
                "baseline": summary(baseline.stream),
                **{t.name: summary(t.stream, baseline.stream) for t in one_worker},
            }
        )
        if wrk_missing:
            emit({"figure": "c32", "skipped": wrk_missing})
        else:
            rounds(everyone, args.rounds, c32)
            line = {
                "figure": "c32",
                "baseline": summary(baseline.c32),
                **{t.name: summary(t.c32, baseline.c32) for t in modes},
            }
            if workers_missing:
                line[multi] = None
                line[f"{multi}_missing"] = workers_missing
            emit(line)
            if many is not None:
                for i in range(args.workers_rounds):
                    pair = [one_worker[0], many]
                    for target in pair if i % 2 == 0 else reversed(pair):
                        target.paired.append(measure_c32(target))
                emit({"figure": "workers", **workers_figure(one_worker[0], many)})

        durable: dict[str, Any] = {"figure": "durable", "seconds": args.durable_seconds}
        if wrk_missing:
            durable["skipped"] = wrk_missing
        else:
            for target in [*one_worker, *([many] if many else [])]:
                assert target.server is not None and target.database is not None
                target.server.wait_flushed(timeout=30)
                before = replay_rows(target.database)
                run = counted(
                    target,
                    functools.partial(
                        wrk,
                        target.url,
                        target.body(stream=False),
                        connections=32,
                        seconds=args.durable_seconds,
                        pid=target.pid,
                        upstream_pid=upstream.pid,
                    ),
                )
                after = settled_rows(target)
                new_rows = {k: v - before.get(k, 0) for k, v in after.items()}
                rows = sum(new_rows.values())
                durable[target.name] = {
                    "wrk_requests": run.requests,
                    "wrk_errors": run.errors,
                    "rps": round(run.rps, 1),
                    "replay_rows_added": rows,
                    "by_state": new_rows,
                    "recorded_share": round(rows / run.requests, 4) if run.requests else None,
                    "completed_share": round(new_rows.get("completed", 0) / run.requests, 4)
                    if run.requests
                    else None,
                    "machine_busy_percent": run.busy_percent,
                    "replay": run.replay,
                    **{
                        k: v
                        for k, v in (summary([run]) or {}).items()
                        if "cpu" in k or "ceiling" in k or "cores" in k
                    },
                }
        emit(durable)

        c1_of = {t.name: summary(t.c1, baseline.c1) or {} for t in one_worker}
        ttfb_of = {t.name: summary(t.stream, baseline.stream) or {} for t in one_worker}
        cpu = (summary(one_worker[0].c32) or {}).get("cpu_ms_per_request")
        figures = {
            "cpu_ms_per_request_c32_1_worker": cpu,
            "added_p50_ms_c1_acknowledged": c1_of["acknowledged"].get("added_p50_ms"),
            "added_p50_ms_c1_batch": c1_of["batch"].get("added_p50_ms"),
            "stream_ttfb_added_p50_ms": ttfb_of["acknowledged"].get("added_p50_ms"),
        }
        emit(
            {
                "figure": "targets",
                **{
                    name: {
                        "value": value,
                        "target": TARGETS[name],
                        "met": None if value is None else value <= TARGETS[name],
                    }
                    for name, value in figures.items()
                },
                f"c32_{args.workers}_workers_ratio": workers_ratio(one_worker[0], many),
                f"c32_{args.workers}_workers_paired_ratio": paired_ratio(one_worker[0], many),
                "idle_busy_percent": idle,
            }
        )


def auth_figure(
    baseline: Target, modes: list[Target], count: int, seconds: float, wrk_missing: str | None
) -> dict[str, Any]:
    """Per durability mode, c=1 of the server with auth off and of the same with ``auth.mode:
    api_key`` (a member key on every request), ``count`` interleaved rounds with the
    baseline: each one's added p50, and the median over rounds of on minus off. The
    ``acknowledged`` p50 waits for a commit (fsync) and moves by more than the key check
    costs from one run to the next; ``batch`` shows the key check with less of that noise."""
    line: dict[str, Any] = {"figure": "auth", "rounds": count}
    if wrk_missing:
        return {**line, "skipped": wrk_missing}

    def measure(target: Target) -> None:
        body = target.body(stream=False)
        target.auth_c1.append(
            counted(
                target,
                lambda: wrk(
                    target.url,
                    body,
                    connections=1,
                    seconds=seconds,
                    pid=None,
                    headers=target.headers,
                ),
            )
        )

    for mode in MODES:
        off = next(t for t in modes if t.name == mode)
        on = next(t for t in modes if t.name == mode + AUTH_SUFFIX)
        rounds([baseline, off, on], count, measure)
        extra = med([a.p50_ms - b.p50_ms for a, b in zip(on.auth_c1, off.auth_c1, strict=True)])
        line[mode] = {
            "auth_off": summary(off.auth_c1, baseline.auth_c1[-count:]),
            "auth_on": summary(on.auth_c1, baseline.auth_c1[-count:]),
            "errors_auth_on": sum(r.errors for r in on.auth_c1),
            "auth_added_p50_ms": {
                "value": extra,
                "target": AUTH_ADDED_TARGET_MS,
                "met": None if extra is None else extra <= AUTH_ADDED_TARGET_MS,
            },
        }
    return line


def workers_ratio(one: Target, many: Target | None) -> dict[str, Any] | None:
    """c=32 req/s of the multi-worker server against one worker's (both ``acknowledged``),
    and whether the machine allowed the target at all: ``ceiling_ratio`` is the multi-worker
    run's ceiling (the cores over the CPU per request of serve, the fake upstream and wrk in
    that run) against one worker's measured rate."""
    single, multi = summary(one.c32), summary(many.c32) if many else None
    if not single or not multi or not single["rps"] or not multi["rps"]:
        return None
    ratio = multi["rps"] / single["rps"]
    top = multi.get("ceiling_rps")
    ceiling_ratio = round(top / single["rps"], 3) if top else None
    left = multi.get("ceiling_rps_cores_left")
    return {
        "value": round(ratio, 3),
        "target": WORKERS_RATIO_TARGET,
        "met": ratio >= WORKERS_RATIO_TARGET,
        "ceiling_rps": top,
        "share_of_ceiling": multi.get("share_of_ceiling"),
        "ceiling_ratio": ceiling_ratio,
        "target_possible_here": None
        if ceiling_ratio is None
        else ceiling_ratio >= WORKERS_RATIO_TARGET,
        # the same with the cores other load left to the run (a shared machine)
        "ceiling_rps_cores_left": left,
        "ceiling_ratio_cores_left": round(left / single["rps"], 3) if left else None,
    }


def paired_ratios(one: Target, many: Target) -> list[float]:
    return [m.rps / o.rps for o, m in zip(one.paired, many.paired, strict=True) if o.rps]


def workers_figure(one: Target, many: Target) -> dict[str, Any]:
    """The ``workers`` figure: both servers' c=32 summaries over the paired runs and each
    round's ratio (the two runs of a round are back to back, so a machine whose speed drifts
    over minutes moves both alike)."""
    return {
        "rounds": len(one.paired),
        one.name: summary(one.paired),
        many.name: summary(many.paired),
        "ratios": [round(r, 3) for r in paired_ratios(one, many)],
    }


def paired_ratio(one: Target, many: Target | None) -> dict[str, Any] | None:
    """The median of the workers figure's per-round ratios, against the target."""
    ratios = paired_ratios(one, many) if many else []
    if not ratios:
        return None
    value = statistics.median(ratios)
    return {
        "value": round(value, 3),
        "target": WORKERS_RATIO_TARGET,
        "met": value >= WORKERS_RATIO_TARGET,
    }


if __name__ == "__main__":
    main()
