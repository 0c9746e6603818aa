"""Read load never reaches the replica's own upkeep: 50 clients reading ``/api/replay`` as
fast as they can, with chat traffic alongside, for a few seconds on SQLite and PostgreSQL.
Readiness stays ``ready`` with storage ``ok``, every heartbeat lands on time (sampled straight
from the database), no read is a 5xx and the replay writer drops nothing. Tight runtime
timings (heartbeat 0.5 s, stale 2 s: a beat has 1 s) make a heartbeat queued behind readers
show at once. A pool that stays busy past ``pool_timeout_seconds`` is a 503 with retry-after."""

import asyncio
import sqlite3
import threading
import time
from contextlib import AsyncExitStack

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient

from routekeeper.server.app import create_app
from routekeeper.settings import load_settings
from routekeeper.testing import ServerProcess

pytestmark = pytest.mark.slow

READERS = 50
SECONDS = 12.0
HEARTBEAT, STALE = 0.5, 2.0
ECHO = {
    "models": [{"name": "small", "backend": {"type": "echo"}}],
    "decisions": [{"name": "default", "model": "small"}],
    "runtime": {"heartbeat_seconds": HEARTBEAT, "stale_after_seconds": STALE},
    "server": {"log_level": "warning"},
}
CHAT = {"model": "auto", "messages": [{"role": "user", "content": "hello"}]}


async def _reader(port: int, stop: asyncio.Event, statuses: dict[int, int]) -> None:
    """One keep-alive client reading the replay list until ``stop``."""
    request = f"GET /api/replay?limit=50 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    while not stop.is_set():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while not stop.is_set():
                writer.write(request)
                await writer.drain()
                status = int((await reader.readline()).split()[1])
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.decode().partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                await reader.readexactly(length)
                statuses[status] = statuses.get(status, 0) + 1
        except (OSError, IndexError, asyncio.IncompleteReadError):
            statuses[0] = statuses.get(0, 0) + 1
        finally:
            writer.close()


def _read_load(port: int, seconds: float) -> dict[int, int]:
    statuses: dict[int, int] = {}

    async def run() -> None:
        stop = asyncio.Event()
        tasks = [asyncio.create_task(_reader(port, stop, statuses)) for _ in range(READERS)]
        await asyncio.sleep(seconds)
        stop.set()
        await asyncio.wait(tasks, timeout=30)

    asyncio.run(run())
    return statuses


class Watch:
    """Beside the load: /readyz every 0.2 s, chat requests, and the replica's stored
    heartbeat read from the database itself every 0.1 s (not through the replica)."""

    def __init__(self, server: ServerProcess, replica_id: str, read_heartbeat) -> None:
        self.server, self.replica_id, self.read_heartbeat = server, replica_id, read_heartbeat
        self.readyz: list[tuple[int, str]] = []
        self.chat: dict[int, int] = {}
        self.beats: list[tuple[float, object]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=t) for t in (self._ready, self._chat, self._beat)]

    def _ready(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                response = client.get(f"{self.server.url}/readyz")
                self.readyz.append((response.status_code, response.json()["storage"]))
                time.sleep(0.2)

    def _chat(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                status = client.post(f"{self.server.url}/v1/chat/completions", json=CHAT)
                self.chat[status.status_code] = self.chat.get(status.status_code, 0) + 1
                time.sleep(0.05)

    def _beat(self) -> None:
        while not self._stop.is_set():
            value = self.read_heartbeat(self.replica_id)
            if not self.beats or self.beats[-1][1] != value:
                self.beats.append((time.monotonic(), value))
            time.sleep(0.1)

    def __enter__(self) -> "Watch":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)


def _heartbeat_reader(workspace, dsn: str | None):
    if dsn is not None:
        import psycopg

        conn = psycopg.connect(dsn, autocommit=True)
        query = "SELECT heartbeat_at FROM runtime_replicas WHERE id = %s"
    else:
        conn = sqlite3.connect(workspace / "state.db", timeout=10, check_same_thread=False)
        query = "SELECT heartbeat_at FROM runtime_replicas WHERE id = ?"
    return conn, lambda replica_id: conn.execute(query, (replica_id,)).fetchone()[0]


def _state(backend_kind: str, request: pytest.FixtureRequest, **pool: object) -> dict:
    if backend_kind == "postgres":
        dsn = request.getfixturevalue("postgres_dsn")
        pg = {"type": "postgres", "dsn": dsn, **pool}
        return {"mode": "shared", "default_backend": "pg", "backends": {"pg": pg}}
    return {"backends": {"main": {"type": "sqlite", **pool}}}


@pytest.mark.exclusive  # its own load takes the machine; it times every heartbeat
def test_fifty_readers_never_delay_a_heartbeat_or_the_replay_writer(
    backend_kind, tmp_path, request
):
    """A read pool of 2 connections, so that the readers queue for it as they would for any
    pool under enough load."""
    pool = {"pool_size": 2} if backend_kind == "postgres" else {"read_pool_size": 2}
    state = _state(backend_kind, request, **pool)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({**ECHO, "state": state}))
    with ServerProcess(workspace=tmp_path / "ws", config=config) as server:
        replica_id = httpx.get(f"{server.url}/readyz").json()["replica_id"]
        with httpx.Client(timeout=10) as client:
            for _ in range(100):
                answer = client.post(f"{server.url}/v1/chat/completions", json=CHAT)
                assert answer.status_code == 200
        dsn = state["backends"]["pg"]["dsn"] if backend_kind == "postgres" else None
        conn, read_heartbeat = _heartbeat_reader(server.workspace, dsn)
        try:
            with Watch(server, replica_id, read_heartbeat) as watch:
                reads = _read_load(server.port, SECONDS)
        finally:
            conn.close()
        status = server.component_status("router_replay")
        gaps = [round(b[0] - a[0], 2) for a, b in zip(watch.beats, watch.beats[1:], strict=False)]
        chats = sum(watch.chat.values())
        print(
            f"{backend_kind}: {sum(reads.values())} reads in {SECONDS:g}s {reads}, chat "
            f"{watch.chat}, readyz samples {len(watch.readyz)}, heartbeats {len(watch.beats)} "
            f"(max gap {max(gaps)}s), replay {status}"
        )
        assert reads and all(200 <= s < 500 for s in reads), reads
        assert {s for s, _ in watch.readyz} == {200}, watch.readyz
        assert {storage for _, storage in watch.readyz} == {"ok"}, watch.readyz
        assert "heartbeat not stored" not in server.log(), server.log_tail()
        # every beat within its period and a beat's budget: none was stuck behind the readers
        assert max(gaps) < HEARTBEAT + STALE / 2, gaps
        assert set(watch.chat) == {200}, watch.chat
        assert status["dropped"] == {k: 0 for k in status["dropped"]}, status
        assert status["ack_timeout"] <= 0.02 * chats, status
        assert server.terminate() == 0


async def _hold_reads(db, count: int, held: threading.Event, release: threading.Event) -> None:
    async with AsyncExitStack() as stack:
        for _ in range(count):
            await stack.enter_async_context(db.read())
        held.set()
        await asyncio.to_thread(release.wait, 60)


def test_a_read_pool_busy_past_its_timeout_is_a_503_with_retry_after(
    backend_kind, tmp_path, request
):
    """Every read connection held: a read waits pool_timeout_seconds, then 503 storage_busy
    with retry-after; chat (whose record goes through the write lane) and the heartbeat go on."""
    size = {"pool_size": 2} if backend_kind == "postgres" else {"read_pool_size": 2}
    state = _state(backend_kind, request, pool_timeout_seconds=0.3, **size)
    settings = load_settings(None, workspace=tmp_path / "ws", overrides={**ECHO, "state": state})
    app = create_app(settings)
    with TestClient(app) as client:
        deadline = time.monotonic() + 20
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, client.get("/readyz").json()
            time.sleep(0.02)
        db = app.state.replica.storage.replay.db
        held, release = threading.Event(), threading.Event()
        holder = client.portal.start_task_soon(_hold_reads, db, 2, held, release)
        try:
            assert held.wait(10)
            started = time.monotonic()
            busy = client.get("/api/replay")
            waited = time.monotonic() - started
            assert busy.status_code == 503, busy.text
            assert busy.headers["retry-after"] == "1"
            assert busy.json()["error"]["code"] == "storage_busy"
            assert 0.3 <= waited < 5, waited
            chat = client.post("/v1/chat/completions", json=CHAT)
            assert chat.status_code == 200
            assert chat.headers["x-routekeeper-replay-durable"] == "true"
            time.sleep(STALE)  # several heartbeats and sweeps while the read pool is taken
            ready = client.get("/readyz").json()
            assert ready["ready"] and ready["storage"] == "ok", ready
        finally:
            release.set()
            holder.result(10)
        assert client.get("/api/replay").status_code == 200
