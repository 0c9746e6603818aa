"""`routekeeper serve --workers N` through the real processes: one port, one replica per
worker, draining, the supervisor's death, start-up failures, every worker in /api/status and
/metrics, and SQLite's write-lock waits between processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import httpx
import pytest
import yaml

from routekeeper.storage.config import SQLiteBackend
from routekeeper.storage.database import Database
from routekeeper.testing import ServerProcess
from routekeeper.testing.server import group_pids, pid_running

pytestmark = pytest.mark.slow

ECHO = {
    "models": [{"name": "small", "backend": {"type": "echo"}}],
    "decisions": [{"name": "default", "model": "small"}],
}


def config(tmp_path: Path, **sections) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({**ECHO, **sections}))
    return path


def ready_replicas(server: ServerProcess) -> list[dict]:
    response = httpx.get(f"{server.url}/api/replicas", params={"phase": "ready"}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["data"]


def wait_ready_replicas(server: ServerProcess, count: int, timeout: float = 30) -> list[dict]:
    """The ready replicas once there are ``count`` (each worker reports ready on its own)."""
    deadline = time.monotonic() + timeout
    while len(rows := ready_replicas(server)) != count:
        assert time.monotonic() < deadline, f"{rows}\n{server.log_tail()}"
        time.sleep(0.1)
    return rows


async def chat_burst(url: str, n: int) -> list[str]:
    """``n`` chat completions, each on a connection of its own (any worker may accept it)."""

    async def one(i: int) -> str:
        async with httpx.AsyncClient(timeout=30) as client:
            response = await client.post(
                f"{url}/v1/chat/completions",
                json={"model": "auto", "messages": [{"role": "user", "content": f"hi {i}"}]},
            )
            assert response.status_code == 200, response.text
            return response.headers["x-routekeeper-replay-id"]

    return list(await asyncio.gather(*(one(i) for i in range(n))))


def test_workers_share_one_port_each_a_replica_and_drain_on_sigterm(tmp_path):
    # server.workers says 3; the flag wins.
    cfg = config(tmp_path, server={"workers": 3})
    server = ServerProcess(workspace=tmp_path / "ws", config=cfg, workers=2)
    with server:
        rows = wait_ready_replicas(server, 2)
        assert len({r["pid"] for r in rows}) == 2
        assert all(r["pid"] != server.proc.pid for r in rows)  # workers, not the supervisor
        assert {r["listen"] for r in rows} == {f"127.0.0.1:{server.port}"}
        ids = asyncio.run(chat_burst(server.url, 40))
        assert server.terminate() == 0
        log = server.log()
        for row in rows:  # each worker's lines name its replica
            assert re.search(rf"\[worker \d {row['id']}\] .*-> draining", log), log[-3000:]
        assert "[supervisor]" in log
        # both started together on an empty SQLite file: one migrated, under the lock
        assert log.count("-> migrating") == 2 and log.count("backend main migrated:") == 1
    again = ServerProcess(workspace=tmp_path / "ws", config=config(tmp_path)).start()
    try:
        for row in rows:
            response = httpx.get(f"{again.url}/api/replicas", params={"limit": 100})
            phases = {r["id"]: r["phase"] for r in response.json()["data"]}
            assert phases[row["id"]] == "stopped"
        assert len(again.list_all("/api/replay")) == len(ids)
    finally:
        again.stop_quietly()


def burst_on_open_connections(port: int, n: int) -> list[str]:
    """Open ``n`` connections at once (the kernel completes them before any worker accepts),
    then send a chat completion on each: the replay ids of the answers."""
    conns = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(n)]
    try:
        for i, conn in enumerate(conns):
            body = json.dumps({"model": "auto", "messages": [{"role": "user", "content": f"{i}"}]})
            conn.sendall(
                f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n"
                f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
                f"connection: close\r\n\r\n{body}".encode()
            )
        ids = []
        for conn in conns:
            answer = b""
            while chunk := conn.recv(65536):
                answer += chunk
            head = answer.split(b"\r\n\r\n", 1)[0].decode()
            assert head.startswith("HTTP/1.1 200"), head
            ids.append(re.search(r"x-routekeeper-replay-id: (\S+)", head, re.I).group(1))
        return ids
    finally:
        for conn in conns:
            conn.close()


def listening_sockets(port: int) -> set[str]:
    """The inodes of the TCP sockets listening on ``port`` (``/proc/net/tcp``, ``tcp6``)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def sockets_of(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            if (target := os.readlink(fd)).startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    return inodes


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT balancing")
def test_each_worker_listens_on_its_own_socket_and_connections_are_spread(tmp_path):
    # Each worker listens on a socket of its own on the port (SO_REUSEPORT; the supervisor
    # holds the port with a bound socket that does not listen): the kernel spreads new
    # connections over the workers, where one shared accept queue let whichever worker woke
    # first take most of a burst (32 of 32 under wrk). 32 connections opened at once: the
    # chance that a fair spread gives a worker fewer than 4 is below 1e-5.
    server = ServerProcess(workspace=tmp_path / "ws", config=config(tmp_path), workers=2)
    with server:
        rows = wait_ready_replicas(server, 2)
        listening = listening_sockets(server.port)
        assert len(listening) == 2
        assert not listening & sockets_of(server.proc.pid)  # the supervisor does not listen
        for row in rows:
            assert len(listening & sockets_of(row["pid"])) == 1
        ids = set(burst_on_open_connections(server.port, 32))
        server.wait_flushed()
        records = [r for r in server.list_all("/api/replay") if r["id"] in ids]
        assert len(records) == 32
        served = Counter(r["replica_id"] for r in records)
        assert set(served) == {r["id"] for r in rows}, served
        assert min(served.values()) >= 4, served


def _logged_at(log: str, pattern: str) -> datetime:
    match = re.search(rf"^(\S+ \S+) .*{pattern}", log, re.M)
    assert match, log[-3000:]
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f")


def test_ctrl_c_drains_the_workers_like_sigterm(tmp_path):
    # Ctrl-C sends SIGINT to the whole foreground process group: every worker gets it as well
    # as the SIGTERM the supervisor forwards. That is one signal, not a second one (which
    # skips server.drain_seconds).
    cfg = config(tmp_path, server={"drain_seconds": 2})
    server = ServerProcess(workspace=tmp_path / "ws", config=cfg, workers=2)
    with server:
        rows = wait_ready_replicas(server, 2)
        os.killpg(server.proc.pid, signal.SIGINT)
        assert server.wait_exit() == 0
        log = server.log()
    for row in rows:
        worker = rf"\[worker \d {row['id']}\] "
        draining = _logged_at(log, worker + ".*ready -> draining")
        stopped = _logged_at(log, worker + ".*draining -> stopped")
        assert (stopped - draining).total_seconds() >= 2, log[-3000:]


def test_sigkill_of_the_supervisor_takes_every_worker_down_and_the_harness_leaves_none(
    tmp_path,
):
    server = ServerProcess(workspace=tmp_path / "ws", config=config(tmp_path), workers=2)
    with server:
        pids = [r["pid"] for r in wait_ready_replicas(server, 2)]
        assert all(pid_running(pid) for pid in pids)
        os.kill(server.proc.pid, signal.SIGKILL)  # the supervisor alone
        killed = time.monotonic()
        server.wait_exit(10)
        while any(pid_running(pid) for pid in pids):
            assert time.monotonic() - killed < 1.0, [p for p in pids if pid_running(p)]
            time.sleep(0.01)
        print(f"workers gone {time.monotonic() - killed:.3f}s after the supervisor's SIGKILL")

        # The harness's kill takes the whole tree at once and returns when none of it runs.
        server.start()
        pids = [r["pid"] for r in wait_ready_replicas(server, 2)]
        assert set(pids) <= set(group_pids(server.proc.pid))
        server.kill()
        assert not [pid for pid in pids if pid_running(pid)]
        assert group_pids(server.proc.pid) == []


def test_a_worker_failing_at_start_backs_off_then_the_supervisor_gives_up(tmp_path):
    workspace = tmp_path / "ws"
    workspace.mkdir()
    with sqlite3.connect(workspace / "state.db") as db:  # a schema from a newer version
        db.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
        db.execute("INSERT INTO alembic_version VALUES ('9999_from_the_future')")
    server = ServerProcess(workspace=workspace, config=config(tmp_path), workers=2)
    began = time.monotonic()
    server.start(wait_ready=False)
    assert server.wait_exit(60) == 1
    took = time.monotonic() - began
    log = server.log()
    assert "giving up" in log and "9999_from_the_future" in log
    starts = re.findall(r"worker (\d) started", log)
    retries = re.findall(r"starting it again in ([\d.]+)s \((\d) of 5\)", log)
    # The slot that gave up was started 5 times, with doubling pauses between the starts.
    assert max(starts.count(slot) for slot in "01") == 5
    delays = sorted({float(d) for d, _ in retries})
    assert delays == [0.5, 1.0, 2.0, 4.0]
    assert took >= sum(delays)


def test_status_and_metrics_show_every_worker_whichever_answers(tmp_path):
    server = ServerProcess(workspace=tmp_path / "ws", config=config(tmp_path), workers=2)
    with server:
        replicas = {r["id"] for r in wait_ready_replicas(server, 2)}
        n = 60
        asyncio.run(chat_burst(server.url, n))
        server.wait_flushed()
        answered_by: set[str] = set()

        def check() -> None:
            status = httpx.get(f"{server.url}/api/status", timeout=10).json()
            answered_by.add(status["replica_id"])
            row = next(s for s in status["surfaces"] if s["name"] == "router_replay")
            assert set(row["workers"]) == replicas
            assert sum(w["queued"] for w in row["workers"].values()) == 0
            # every write of every worker: one per record when start and finish share a batch
            assert sum(w["written"] for w in row["workers"].values()) >= n

            text = httpx.get(f"{server.url}/metrics", timeout=10).text
            completed = re.findall(
                r'routekeeper_requests_total\{decision="default",model="small",'
                r'outcome="completed",replica="(rep_\w+)"\} (\d+)',
                text,
            )
            assert {rid for rid, _ in completed} <= replicas
            assert sum(float(v) for _, v in completed) == n
            queued = re.findall(r'routekeeper_replay_queued_records\{replica="(rep_\w+)"\}', text)
            assert set(queued) == replicas
            waits = re.findall(
                r'routekeeper_storage_write_lock_waits_total\{backend="main",replica="(rep_\w+)"\}',
                text,
            )
            assert set(waits) == replicas

        # The other worker's figures are as of its last publication (every PUBLISH_SECONDS,
        # later on a loaded machine): each read, whichever worker answers, must reach the
        # exact figures once the boards have caught up (no request runs meanwhile).
        for _ in range(12):  # a fresh connection each time: either worker may answer
            deadline = time.monotonic() + 15
            while True:
                try:
                    check()
                    break
                except AssertionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
        print(f"/api/status answered by {len(answered_by)} of 2 workers")


def test_memory_state_with_several_workers_is_refused(tmp_path):
    cfg = config(
        tmp_path,
        state={"backends": {"main": {"type": "memory"}}, "allow_ephemeral": ["router_replay"]},
    )
    server = ServerProcess(workspace=tmp_path / "ws", config=cfg, workers=2)
    server.start(wait_ready=False)
    assert server.wait_exit(30) == 3
    assert "each of the 2 workers would keep its own copy" in " ".join(server.log().split())


@pytest.fixture
async def two_databases(tmp_path):
    """Two databases on one SQLite file (each as another process would open it): the one
    that will hold the write lock and the one that will wait for it."""
    backend = SQLiteBackend(busy_timeout_ms=5000)
    holder = Database("main", backend, sqlite_path=tmp_path / "state.db")
    waiter = Database("main", backend, sqlite_path=tmp_path / "state.db")
    await holder.open()
    await waiter.open()
    try:
        yield holder, waiter
    finally:
        await holder.close()
        await waiter.close()


async def test_a_write_that_waits_for_another_process_lock_is_counted(two_databases):
    holder, waiter = two_databases
    async with waiter.write() as conn:
        await conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    assert waiter.write_lock_waits.waits == 0
    released = asyncio.Event()

    async def hold() -> None:
        async with holder.write() as conn:
            await conn.exec_driver_sql("INSERT INTO t VALUES (1)")
            await asyncio.sleep(0.3)
        released.set()

    task = asyncio.create_task(hold())
    await asyncio.sleep(0.1)
    async with waiter.write() as conn:
        await conn.exec_driver_sql("INSERT INTO t VALUES (2)")
    await task
    assert waiter.write_lock_waits.waits == 1
    assert waiter.write_lock_waits.seconds >= 0.1
    assert holder.write_lock_waits.waits == 0


async def test_run_write_takes_turns_with_another_process_through_the_writer_lock_file(
    tmp_path, two_databases
):
    # Each database has its own open file description of `state.db-writer`, so their
    # flocks exclude each other as two workers' would. The one that finds the lock taken
    # waits for it (counted), then commits.
    holder, waiter = two_databases
    path = tmp_path / "state.db"
    await waiter.run_write(lambda conn: conn.exec_driver_sql("CREATE TABLE t (x INTEGER)"))
    assert (tmp_path / "state.db-writer").exists()
    assert waiter.write_lock_waits.waits == 0
    entered = asyncio.Event()
    loop = asyncio.get_running_loop()

    def slow(conn):
        conn.exec_driver_sql("INSERT INTO t VALUES (1)")
        loop.call_soon_threadsafe(entered.set)
        time.sleep(0.3)  # on the holder's writer thread, the lock held

    held = asyncio.create_task(holder.run_write(slow))
    await entered.wait()
    await waiter.run_write(lambda conn: conn.exec_driver_sql("INSERT INTO t VALUES (2)"))
    await held
    assert waiter.write_lock_waits.waits == 1
    assert waiter.write_lock_waits.seconds >= 0.1
    assert holder.write_lock_waits.waits == 0
    with sqlite3.connect(path) as conn:
        assert sorted(r[0] for r in conn.execute("SELECT x FROM t")) == [1, 2]


ORPHAN = """
import os, subprocess, sys, time
from routekeeper.cli.workers import die_with_parent
if sys.argv[1] == "parent":
    child = subprocess.Popen([sys.executable, "-c", sys.argv[2], "child", str(os.getpid())])
    print(child.pid, flush=True)
    time.sleep(60)
else:
    die_with_parent(int(sys.argv[2]), pdeathsig=False)
    print("watching", flush=True)
    time.sleep(60)
"""


def test_without_pdeathsig_the_getppid_poll_ends_a_worker_within_a_second():
    """The fallback where prctl does not exist: a worker notices its parent is gone."""

    parent = subprocess.Popen(
        [sys.executable, "-c", ORPHAN, "parent", ORPHAN], stdout=subprocess.PIPE, text=True
    )
    child = None
    try:
        child = int(parent.stdout.readline())
        assert parent.stdout.readline().strip() == "watching"  # the child's, same pipe
        assert pid_running(child)
        parent.kill()
        parent.wait()
        killed = time.monotonic()
        while pid_running(child):
            assert time.monotonic() - killed < 1.0
            time.sleep(0.01)
    finally:
        parent.kill()
        parent.wait()
        parent.stdout.close()
        if child is not None and pid_running(child):
            os.kill(child, signal.SIGKILL)


def test_workers_flag_is_checked_like_the_setting(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "routekeeper", "serve", "-w", str(tmp_path), "--workers", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "server.workers" in result.stderr and "--workers" in result.stderr


async def test_run_write_goes_on_without_the_writer_lock_file_when_it_cannot_be_opened(
    tmp_path, caplog
):
    (tmp_path / "state.db-writer").mkdir()  # opening it for writing fails (EISDIR)
    db = Database("main", SQLiteBackend(), sqlite_path=tmp_path / "state.db")
    await db.open()
    try:
        await db.run_write(lambda conn: conn.exec_driver_sql("CREATE TABLE t (x INTEGER)"))
        await db.run_write(lambda conn: conn.exec_driver_sql("INSERT INTO t VALUES (1)"))
    finally:
        await db.close()
    with sqlite3.connect(tmp_path / "state.db") as conn:
        assert [r[0] for r in conn.execute("SELECT x FROM t")] == [1]
    warnings = [r for r in caplog.records if "state.db-writer" in r.getMessage()]
    assert len(warnings) == 1, warnings  # logged once, not per transaction
