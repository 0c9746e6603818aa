"""Shutdown and storage faults with the real server: the graceful budget, the drain delay,
a port already taken, a database that stops answering or cannot be reached."""

import signal
import socket
import time
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
import yaml

from routekeeper.testing import ServerProcess, TcpProxy, shared_postgres_state

pytestmark = pytest.mark.slow


def write_config(path, data):
    path.write_text(yaml.safe_dump(data))
    return path


def readyz(server):
    return httpx.get(f"{server.url}/readyz", timeout=5)


@pytest.mark.exclusive  # times the shutdown: a busy neighbour would stretch it
def test_sigterm_finishes_well_within_the_graceful_budget(tmp_path):
    config = write_config(tmp_path / "c.yaml", {"server": {"graceful_timeout_seconds": 3}})
    with ServerProcess(workspace=tmp_path / "ws", config=config) as server:
        started = time.monotonic()
        assert server.terminate(timeout=10) == 0
        elapsed = time.monotonic() - started
        assert elapsed < 3.0, f"took {elapsed:.2f}s\n{server.log_tail()}"


def test_drain_seconds_keeps_the_port_open_answering_503(tmp_path):
    config = write_config(
        tmp_path / "c.yaml", {"server": {"drain_seconds": 1.5, "graceful_timeout_seconds": 5}}
    )
    with ServerProcess(workspace=tmp_path / "ws", config=config) as server:
        server.proc.send_signal(signal.SIGTERM)
        seen = []
        deadline = time.monotonic() + 1.2
        while time.monotonic() < deadline:
            response = readyz(server)
            seen.append((response.status_code, response.json()["phase"]))
            time.sleep(0.05)
        assert (503, "draining") in seen, seen
        assert server.wait_exit(10) == 0


def test_a_port_already_taken_exits_1_with_a_message(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        server = ServerProcess(workspace=tmp_path / "ws", port=port)
        server.start(wait_ready=False)
        assert server.wait_exit(30) == 1
        assert "could not listen on" in server.log()


def _pg_config(tmp_path, dsn, **sections):
    state = shared_postgres_state(dsn)
    return write_config(
        tmp_path / f"pg-{len(list(tmp_path.glob('pg-*')))}.yaml", {"state": state, **sections}
    )


@pytest.mark.postgres
@pytest.mark.exclusive  # times the shutdown against its budget
def test_sigterm_with_a_hung_database_still_ends_within_the_budget(tmp_path, postgres_dsn):
    target = urlsplit(postgres_dsn)
    with TcpProxy(target.hostname, target.port or 5432) as proxy:
        config = _pg_config(
            tmp_path, proxy.dsn_for(postgres_dsn), server={"graceful_timeout_seconds": 4}
        )
        server = ServerProcess(workspace=tmp_path / "ws", config=config).start()
        try:
            hung_id = readyz(server).json()["replica_id"]
            proxy.freeze()
            started = time.monotonic()
            code = server.terminate(timeout=30)
            elapsed = time.monotonic() - started
        finally:
            server.stop_quietly()  # a server that outlived its budget does not outlive the test
        assert code == 1, server.log_tail()
        assert elapsed < 4 + 2, f"took {elapsed:.2f}s"
        assert "within server.graceful_timeout_seconds" in server.log()
        proxy.cut()  # its sessions end: the server drops the dead replica's liveness lock
    # a replica on the direct DSN records the replica that could not say goodbye, once it has
    # been settled for stale_after_seconds (a free advisory lock alone is no proof)
    runtime = {"heartbeat_seconds": 0.5, "stale_after_seconds": 3}
    direct = _pg_config(tmp_path, postgres_dsn, runtime=runtime)
    with ServerProcess(workspace=tmp_path / "ws2", config=direct) as survivor:
        deadline = time.monotonic() + 3 + 0.5 + 2
        while True:
            rows = httpx.get(f"{survivor.url}/api/replicas").json()["data"]
            if {r["id"]: r["phase"] for r in rows}[hung_id] == "crashed":
                break
            assert time.monotonic() < deadline, survivor.log_tail()
            time.sleep(0.1)


@pytest.mark.postgres
def test_unreachable_database_at_start_exits_1_quickly(tmp_path, postgres_dsn):
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    parts = urlsplit(postgres_dsn)
    dsn = urlunsplit(parts._replace(netloc=f"127.0.0.1:{port}"))
    server = ServerProcess(workspace=tmp_path / "ws", config=_pg_config(tmp_path, dsn))
    started = time.monotonic()
    server.start(wait_ready=False)
    assert server.wait_exit(30) == 1
    assert time.monotonic() - started < 15
    assert "database unavailable" in server.log()


@pytest.mark.postgres
def test_readyz_reports_degraded_storage_and_recovers_without_restart(tmp_path, postgres_dsn):
    target = urlsplit(postgres_dsn)
    with TcpProxy(target.hostname, target.port or 5432) as proxy:
        config = _pg_config(
            tmp_path,
            proxy.dsn_for(postgres_dsn),
            runtime={"heartbeat_seconds": 0.3, "stale_after_seconds": 3},
        )
        with ServerProcess(workspace=tmp_path / "ws", config=config) as server:
            assert readyz(server).json()["storage"] == "ok"
            proxy.cut()
            deadline = time.monotonic() + 10
            while readyz(server).json()["storage"] != "degraded":
                assert time.monotonic() < deadline, server.log_tail()
                time.sleep(0.1)
            proxy.restore()
            deadline = time.monotonic() + 15
            while readyz(server).json()["storage"] != "ok":
                assert time.monotonic() < deadline, server.log_tail()
                time.sleep(0.1)
            body = readyz(server).json()
            assert body["phase"] == "ready"
            assert server.terminate() == 0
