"""Two PostgreSQL replicas under load, each through its own TCP proxy to the same database:
cutting the database away (every session ends, so every advisory lock is free at once) for
about a heartbeat, for part of the stale window and for twice the stale window, or one
replica's link for part of the stale window, declares nobody crashed and stops nobody; both
serve afterwards. A SIGKILL is still recorded within stale + heartbeat. Runtime timings well
below the defaults (heartbeat 0.6 s, stale 3 s) keep the test short; the longest cut is twice
the stale window, so every heartbeat is stale when the database comes back."""

import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from routekeeper.testing import ServerProcess, TcpProxy, shared_postgres_state

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

HEARTBEAT, STALE = 0.6, 3.0
# Longer than any verdict could take after a cut: stale + heartbeat, and a second's slack.
SETTLE = STALE + HEARTBEAT + 1.0
# Database cuts: about a heartbeat, part of the stale window, twice the stale window.
CUTS = (HEARTBEAT, STALE * 0.6, STALE * 2)
# One replica's own link: shorter than the stale window (longer would rightly be a crash).
LINK_CUT = STALE * 0.6
CHAT = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}


class Load:
    """Two clients per replica sending chat completions until stopped."""

    def __init__(self, servers: list[ServerProcess]) -> None:
        self.statuses: dict[int, int] = {}
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(s,), daemon=True)
            for s in servers
            for _ in range(2)
        ]

    def _run(self, server: ServerProcess) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                try:
                    status = client.post(f"{server.url}/v1/chat/completions", json=CHAT).status_code
                except httpx.HTTPError:
                    status = 0
                self.statuses[status] = self.statuses.get(status, 0) + 1
                time.sleep(0.02)

    def __enter__(self) -> "Load":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)


def _replicas(server: ServerProcess) -> dict[str, str]:
    rows = httpx.get(f"{server.url}/api/replicas", params={"limit": 100}, timeout=10).json()
    return {r["id"]: r["phase"] for r in rows["data"]}


def _crash_events(server: ServerProcess) -> list[dict]:
    page = httpx.get(
        f"{server.url}/api/runtime/events", params={"kind": "replica.crashed"}, timeout=10
    ).json()
    return list(page["data"])


def _serving(servers: list[ServerProcess], ids: list[str], what: str) -> None:
    """Both processes run, are ready with storage ok and answer a chat completion; nobody
    is crashed."""
    deadline = time.monotonic() + 10
    for server in servers:
        assert server.exit_code() is None, f"{what}: a replica exited\n{server.log_tail()}"
        while True:
            body = httpx.get(f"{server.url}/readyz", timeout=5).json()
            if body["ready"] and body["storage"] == "ok":
                break
            assert time.monotonic() < deadline, f"{what}: {body}\n{server.log_tail()}"
            time.sleep(0.2)
        answer = httpx.post(f"{server.url}/v1/chat/completions", json=CHAT, timeout=10)
        assert answer.status_code == 200, f"{what}: {answer.text}"
    phases = _replicas(servers[0])
    assert [phases[i] for i in ids] == ["ready", "ready"], f"{what}: {phases}"
    assert _crash_events(servers[0]) == [], f"{what}: {_crash_events(servers[0])}"


def test_database_cuts_declare_no_replica_crashed(tmp_path, postgres_dsn):
    target = urlsplit(postgres_dsn)
    with (
        TcpProxy(target.hostname, target.port or 5432) as first_link,
        TcpProxy(target.hostname, target.port or 5432) as second_link,
    ):
        servers = []
        for i, link in enumerate((first_link, second_link)):
            config = {
                "models": [{"name": "small", "backend": {"type": "echo"}}],
                "decisions": [{"name": "default", "model": "small"}],
                "state": shared_postgres_state(
                    link.dsn_for(postgres_dsn), connect_timeout_seconds=1
                ),
                "runtime": {"heartbeat_seconds": HEARTBEAT, "stale_after_seconds": STALE},
            }
            path = tmp_path / f"c{i}.yaml"
            path.write_text(yaml.safe_dump(config))
            servers.append(ServerProcess(workspace=tmp_path / f"ws{i}", config=path).start())
        ids = [httpx.get(f"{s.url}/readyz").json()["replica_id"] for s in servers]
        with Load(servers) as load:
            time.sleep(HEARTBEAT * 2)
            for seconds in CUTS:
                first_link.cut()
                second_link.cut()
                time.sleep(seconds)
                first_link.restore()
                second_link.restore()
                time.sleep(SETTLE)
                _serving(servers, ids, f"after a {seconds:g} s database cut")
            # one replica's own link, the other keeps the database all along
            second_link.cut()
            time.sleep(LINK_CUT)
            second_link.restore()
            time.sleep(SETTLE)
            _serving(servers, ids, f"after a {LINK_CUT:g} s cut of one replica's link")
        assert load.statuses.get(200, 0) > 100, load.statuses

        servers[1].kill()
        killed_at = time.monotonic()
        while _replicas(servers[0])[ids[1]] != "crashed":
            assert time.monotonic() - killed_at < SETTLE + 2, servers[0].log_tail()
            time.sleep(0.1)
        detected = time.monotonic() - killed_at
        print(f"SIGKILL recorded {detected:.2f}s later (bound {STALE + HEARTBEAT:g}s + a sweep)")
        assert detected <= SETTLE
        assert servers[0].terminate() == 0


@pytest.fixture
def one_replica(tmp_path, postgres_dsn) -> Iterator[tuple[ServerProcess, str]]:
    config = tmp_path / "one.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "state": shared_postgres_state(postgres_dsn),
                "runtime": {"heartbeat_seconds": 0.3, "stale_after_seconds": 2},
            }
        )
    )
    with ServerProcess(workspace=tmp_path / "one", config=config) as server:
        yield server, httpx.get(f"{server.url}/readyz").json()["replica_id"]


def _end_liveness_session(dsn: str, replica_id: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        ended = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = %s AND datname = current_database()",
            (f"routekeeper liveness {replica_id}",),
        ).fetchall()
    assert len(ended) == 1


def _lock_holder(dsn: str, replica_id: str) -> str | None:
    import psycopg

    from routekeeper.storage.liveness import ADVISORY_NAMESPACE, advisory_key

    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objid = %s",
            (ADVISORY_NAMESPACE, advisory_key(replica_id)),
        ).fetchone()
    return None if row is None else row[0]


def test_a_replica_whose_lock_session_ends_takes_it_back_and_serves(postgres_dsn, one_replica):
    server, replica_id = one_replica
    _end_liveness_session(postgres_dsn, replica_id)
    deadline = time.monotonic() + 5
    while _lock_holder(postgres_dsn, replica_id) != f"routekeeper liveness {replica_id}":
        assert time.monotonic() < deadline, server.log_tail()
        time.sleep(0.05)
    time.sleep(1.0)
    assert server.exit_code() is None
    body = httpx.get(f"{server.url}/readyz").json()
    assert body["ready"] and body["storage"] == "ok", body
    assert "liveness lock taken again" in server.log()
    assert server.terminate() == 0


def test_a_replica_whose_lock_another_replica_holds_exits_1(postgres_dsn, one_replica):
    """Its identity is not its own any more: exit rather than run as two. The other session
    queues for the lock before the replica's session ends, so it is granted the lock the
    moment that session is gone, before the replica's next check can take it back."""
    import psycopg

    from routekeeper.storage.liveness import ADVISORY_NAMESPACE, advisory_key

    server, replica_id = one_replica
    key = (ADVISORY_NAMESPACE, advisory_key(replica_id))
    with psycopg.connect(postgres_dsn, autocommit=True) as other:
        other.execute("SELECT set_config('application_name', 'routekeeper liveness rep_x', false)")
        other_pid = other.info.backend_pid
        waiter = threading.Thread(
            target=lambda: other.execute("SELECT pg_advisory_lock(%s, %s)", key), daemon=True
        )
        waiter.start()
        with psycopg.connect(postgres_dsn, autocommit=True) as admin:
            deadline = time.monotonic() + 10
            while not admin.execute(
                "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                "AND pid = %s AND classid = %s AND objid = %s",
                (other_pid, *key),
            ).fetchone():
                assert time.monotonic() < deadline, "the other session never queued"
                time.sleep(0.02)
        _end_liveness_session(postgres_dsn, replica_id)
        waiter.join(10)
        assert not waiter.is_alive(), "the other session was not granted the lock"
        assert server.wait_exit(15) == 1
    assert "held by another session ('routekeeper liveness rep_x')" in server.log()
