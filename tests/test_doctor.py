"""`routekeeper doctor` on healthy and broken workspaces."""

import json
import sqlite3
import subprocess
import sys

import pytest
import yaml

from routekeeper.testing import ServerProcess

pytestmark = pytest.mark.slow


def doctor(*args: str) -> tuple[int, dict]:
    done = subprocess.run(
        [sys.executable, "-m", "routekeeper", "doctor", "--format", "json", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


def errors(report: dict) -> list[str]:
    return [f"{f['check']}: {f['message']}" for f in report["findings"] if f["level"] == "error"]


@pytest.fixture
def served_workspace(tmp_path):
    """A workspace a replica served from and stopped cleanly."""
    workspace = tmp_path / "ws"
    server = ServerProcess(workspace=workspace)
    server.start()
    assert server.terminate() == 0
    return workspace


def test_healthy_workspace_exits_0(served_workspace):
    code, report = doctor("--workspace", str(served_workspace))
    assert code == 0, report
    assert report["healthy"] is True and errors(report) == []
    checks = {f["check"] for f in report["findings"]}
    assert {"contract", "integrity", "schema", "replicas", "recovery"} <= checks


def test_truncated_database_is_an_error(served_workspace):
    db = served_workspace / "state.db"
    size = db.stat().st_size
    with open(db, "r+b") as f:
        f.truncate(size // 2)
    code, report = doctor("--workspace", str(served_workspace))
    assert code == 1
    assert any(e.startswith("integrity:") for e in errors(report)), report


def test_database_truncated_to_nothing_is_an_error(served_workspace):
    (served_workspace / "state.db").write_bytes(b"")
    code, report = doctor("--workspace", str(served_workspace))
    assert code == 1
    assert any("schema is empty" in e for e in errors(report)), report


def test_schema_newer_than_the_code_is_an_error(served_workspace):
    conn = sqlite3.connect(served_workspace / "state.db")
    conn.execute("UPDATE alembic_version SET version_num = '0099_later'")
    conn.commit()
    conn.close()
    code, report = doctor("--workspace", str(served_workspace))
    assert code == 1
    assert any("0099_later" in e and "newer" in e for e in errors(report)), report


def test_missing_workspace_is_an_error(tmp_path):
    code, report = doctor("--workspace", str(tmp_path / "nothing"))
    assert code == 1 and any("no database file" in e for e in errors(report))
    assert not (tmp_path / "nothing" / "state.db").exists()


def test_killed_replica_is_reported_and_recovery_dry_run_changes_nothing(tmp_path):
    workspace = tmp_path / "ws"
    server = ServerProcess(workspace=workspace).start()
    server.kill()
    for _ in range(2):  # dry run: the second look finds the same thing
        code, report = doctor("--workspace", str(workspace))
        assert code == 0, report  # a warning, not an error: the next start fixes it
        warned = [f for f in report["findings"] if f["level"] == "warn"]
        assert any(f["check"] == "replicas" and "lock_free" in f["message"] for f in warned)
        recovery = next(f for f in report["findings"] if f["check"] == "recovery")
        assert recovery["details"]["counts"] == {"dead_found": 1, "marked_crashed": 0}
    with server.start():
        code, report = doctor("--workspace", str(workspace))
    assert code == 0
    assert any(
        f["check"] == "replicas" and "crashed at" in f["message"] for f in report["findings"]
    )


def test_contract_violation_is_an_error(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump({"state": {"backends": {"m": {"type": "memory"}}, "default_backend": "m"}})
    )
    code, report = doctor("--config", str(config), "--workspace", str(tmp_path))
    assert code == 1
    assert any("runtime_status (shared_durable_workflow_state)" in e for e in errors(report))


@pytest.mark.postgres
def test_doctor_on_postgres(tmp_path, postgres_dsn):
    config = tmp_path / "pg.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "state": {
                    "mode": "shared",
                    "default_backend": "pg",
                    "backends": {"pg": {"type": "postgres", "dsn": postgres_dsn}},
                }
            }
        )
    )
    code, report = doctor("--config", str(config), "--workspace", str(tmp_path))
    assert code == 1 and any("schema is empty" in e for e in errors(report))
    with ServerProcess(workspace=tmp_path / "ws", config=config) as server:
        code, report = doctor("--config", str(config), "--workspace", str(tmp_path))
        assert code == 0, report
        server.kill()
    code, report = doctor("--config", str(config), "--workspace", str(tmp_path))
    assert code == 0
    assert any(f["check"] == "replicas" and "lock_free" in f["message"] for f in report["findings"])
