"""The real `routekeeper serve` process: readiness, status, SIGTERM, contract refusals,
PostgreSQL shared mode with replicas starting together."""

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
import yaml

from routekeeper.contract import SURFACES
from routekeeper.testing import ServerProcess

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "routekeeper.yaml"


def write_config(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def status(server: ServerProcess) -> dict:
    response = httpx.get(f"{server.url}/api/status", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def _pythonpath() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": path} if path else {}


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "routekeeper", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        # PYTHONPATH kept: a checkout run with another venv starts its own code.
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", **_pythonpath()},
    )


def test_example_config_serves_and_status_cli_shows_the_same(tmp_path):
    with ServerProcess(workspace=tmp_path / "ws", config=EXAMPLE) as server:
        body = status(server)
        me = next(r for r in body["replicas"] if r["current"])
        assert me["phase"] == "ready" and me["id"].startswith("rep_")
        assert {s["name"]: s["class"] for s in body["surfaces"]} == {
            name: surface.state_class.value for name, surface in SURFACES.items()
        }
        table = run_cli("status", "--url", server.url)
        assert table.returncode == 0, table.stderr
        assert me["id"] in table.stdout and "ready" in table.stdout
        for text in [*SURFACES, "shared_durable_workflow_state", "main (sqlite)"]:
            assert text in table.stdout
        as_json = run_cli("status", "--url", server.url, "--format", "json")
        assert json.loads(as_json.stdout)["replica_id"] == body["replica_id"]
    assert (tmp_path / "ws" / "state.db").exists()


def test_status_cli_fails_cleanly_when_nothing_listens(tmp_path):
    result = run_cli("status", "--url", "http://127.0.0.1:9")
    assert result.returncode == 1 and "cannot reach" in result.stderr


def test_sigterm_ends_the_replica_stopped_and_the_next_start_shows_it(tmp_path):
    server = ServerProcess(workspace=tmp_path / "ws", config=EXAMPLE)
    with server:
        first = status(server)["replica_id"]
        assert server.terminate(timeout=15) == 0
        assert "draining -> stopped" in server.log()
        server.start()
        body = status(server)
        phases = {r["id"]: r["phase"] for r in body["replicas"]}
        assert phases[first] == "stopped"
        assert phases[body["replica_id"]] == "ready"
        events = httpx.get(
            f"{server.url}/api/runtime/events",
            params={
                "replica_id": first,
                "order": "asc",
                "limit": 100,
                "kind": "replica.phase_changed",
            },
        ).json()["data"]
        assert [(e["from_phase"], e["to_phase"]) for e in events] == [
            (None, "starting"),
            ("starting", "migrating"),
            ("migrating", "recovering"),
            ("recovering", "ready"),
            ("ready", "draining"),
            ("draining", "stopped"),
        ]


def test_durable_surface_on_memory_is_refused_until_allowed(tmp_path):
    state = {
        "backends": {"main": {"type": "sqlite"}, "mem": {"type": "memory"}},
        "surfaces": {"runtime_status": {"backend": "mem"}, "runtime_events": {"backend": "mem"}},
    }
    refused = write_config(tmp_path / "refused.yaml", {"state": state})
    check = run_cli("state", "check", "--config", str(refused), "--workspace", str(tmp_path / "ws"))
    assert check.returncode == 3
    assert "runtime_status (shared_durable_workflow_state)" in check.stderr
    assert "allow_ephemeral" in check.stderr
    server = ServerProcess(workspace=tmp_path / "ws", config=refused)
    server.start(wait_ready=False)
    assert server.wait_exit(30) == 3
    assert "runtime_status (shared_durable_workflow_state)" in server.log()

    allowed = write_config(
        tmp_path / "allowed.yaml",
        {"state": {**state, "allow_ephemeral": ["runtime_status", "runtime_events"]}},
    )
    check = run_cli("state", "check", "--config", str(allowed), "--workspace", str(tmp_path / "ws"))
    assert check.returncode == 0, check.stderr
    with ServerProcess(workspace=tmp_path / "ws", config=allowed) as server:
        surfaces = {s["name"]: s for s in status(server)["surfaces"]}
        assert surfaces["runtime_status"]["ephemeral"] is True
        assert surfaces["runtime_status"]["backend_type"] == "memory"
        assert surfaces["runtime_status"]["rows"] == 1


def test_serve_refuses_a_schema_it_may_not_migrate(tmp_path):
    config = write_config(tmp_path / "c.yaml", {"state": {"auto_migrate": False}})
    server = ServerProcess(workspace=tmp_path / "ws", config=config)
    server.start(wait_ready=False)
    assert server.wait_exit(30) == 1
    assert "routekeeper db upgrade" in server.log()
    upgrade = run_cli("db", "upgrade", "--config", str(config), "--workspace", str(tmp_path / "ws"))
    assert upgrade.returncode == 0, upgrade.stderr
    server.start()
    assert server.terminate() == 0


def test_serve_refuses_a_database_from_a_newer_version(tmp_path):
    import sqlite3

    with ServerProcess(workspace=tmp_path / "ws", config=EXAMPLE) as server:
        server.terminate()
    conn = sqlite3.connect(tmp_path / "ws" / "state.db")
    conn.execute("UPDATE alembic_version SET version_num = '9999_future'")
    conn.commit()
    conn.close()
    server.start(wait_ready=False)
    assert server.wait_exit(30) == 1
    assert "9999_future" in server.log() and "newer version" in server.log()


@pytest.mark.postgres
def test_two_replicas_start_together_on_an_empty_postgres_database(tmp_path, postgres_dsn):
    config = write_config(
        tmp_path / "shared.yaml",
        {
            "state": {
                "mode": "shared",
                "default_backend": "pg",
                "backends": {"pg": {"type": "postgres", "dsn": postgres_dsn}},
            }
        },
    )
    servers = [ServerProcess(workspace=tmp_path / f"ws{i}", config=config) for i in range(2)]
    try:
        for server in servers:
            server.start(wait_ready=False)
        ready = []
        threads = [
            threading.Thread(target=lambda s=s: ready.append(s.wait_ready(timeout=60)))
            for s in servers
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(ready) == 2, [s.log_tail() for s in servers]
        ids = {s.url: status(s)["replica_id"] for s in servers}
        for server in servers:
            listed = {r["id"]: r["phase"] for r in status(server)["replicas"]}
            assert set(ids.values()) <= set(listed), listed
            assert all(listed[i] == "ready" for i in ids.values())
            surfaces = {s["name"]: s for s in status(server)["surfaces"]}
            assert surfaces["runtime_status"]["backend_type"] == "postgres"
        migrated = sum("migrated: 0001_runtime" in s.log() for s in servers)
        assert migrated == 1
        for server in servers:
            assert server.terminate() == 0
    finally:
        for server in servers:
            server.__exit__(None, None, None)


def test_readyz_is_503_with_the_phase_until_ready(tmp_path):
    """Hold the SQLite write lock from outside: the replica waits in `migrating` (503) and
    becomes ready once the lock is released."""
    import sqlite3
    import time

    config = write_config(
        tmp_path / "c.yaml",
        {"state": {"backends": {"main": {"type": "sqlite", "busy_timeout_ms": 30000}}}},
    )
    server = ServerProcess(workspace=tmp_path / "ws", config=config)
    with server:
        server.terminate()
    blocker = sqlite3.connect(tmp_path / "ws" / "state.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        server.start(wait_ready=False)
        seen = None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                response = httpx.get(f"{server.url}/readyz", timeout=2)
            except httpx.HTTPError:
                time.sleep(0.05)
                continue
            assert response.status_code == 503, response.text
            seen = response.json()
            if seen["phase"] == "migrating":
                break
            time.sleep(0.05)
        assert seen is not None and seen["phase"] == "migrating" and seen["ready"] is False
        assert httpx.get(f"{server.url}/livez").status_code == 200
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert server.wait_ready(timeout=20)["phase"] == "ready"
    assert server.terminate() == 0


def test_heartbeat_advances_while_ready(tmp_path):
    import time

    config = write_config(tmp_path / "c.yaml", {"runtime": {"heartbeat_seconds": 0.2}})
    with ServerProcess(workspace=tmp_path / "ws", config=config) as server:

        def beat() -> str:
            body = status(server)
            return next(r["heartbeat_at"] for r in body["replicas"] if r["current"])

        first = beat()
        deadline = time.monotonic() + 10  # a beat every 0.2 s: the next one, not a guess
        while beat() == first:
            assert time.monotonic() < deadline, server.log_tail()
            time.sleep(0.05)
        assert beat() > first
