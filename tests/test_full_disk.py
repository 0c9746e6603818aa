"""Starting on a full disk: the replica exits 1 naming the reason and the path, without a
traceback. The full disk is a real one: a small tmpfs mounted in a private mount namespace
(``unshare``) and filled up before ``serve`` starts, so nothing outside the test is touched."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow


def _namespace_problem() -> str | None:
    if shutil.which("unshare") is None:
        return "unshare(1) is not installed"
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        return f"cannot mount a tmpfs in a private namespace: {probe.stderr.strip()}"
    return None


def serve_on_a_full_filesystem(
    mountpoint: Path, args: list[str], *, prepare: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Mount a 2 MiB tmpfs on ``mountpoint`` (private to the child), run ``prepare`` there,
    fill the filesystem to the last byte, then exec ``routekeeper serve`` with ``args``."""
    problem = _namespace_problem()
    if problem is not None:
        pytest.skip(problem)
    mountpoint.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    script = (
        'mount -t tmpfs -o size=2m tmpfs "$1" || exit 97\n'
        + (" ".join(f'"{a}"' for a in prepare) + " >/dev/null 2>&1 || exit 98\n" if prepare else "")
        + 'head -c 8M /dev/zero > "$1/fill" 2>/dev/null\n'
        + 'df -P "$1" | tail -1 | grep -q " 100% " || exit 99\n'
        + 'shift; exec "$@"\n'
    )
    serve = [python, "-m", "routekeeper", "serve", "--host", "127.0.0.1", "--port", "0", *args]
    return subprocess.run(
        ["unshare", "-rm", "sh", "-c", script, "sh", str(mountpoint), *serve],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _check_refused(result: subprocess.CompletedProcess[str], path: Path) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert f"storage_unavailable: no space left on device ({path}" in output, output
    assert "Traceback" not in output, output


def test_a_full_workspace_is_refused_by_name_at_the_liveness_lock(tmp_path):
    """The database lives elsewhere and opens; the liveness lock file cannot be written."""
    workspace = tmp_path / "ws"
    config = tmp_path / "c.yaml"
    database = tmp_path / "db" / "state.db"
    config.write_text(
        yaml.safe_dump({"state": {"backends": {"main": {"type": "sqlite", "path": str(database)}}}})
    )
    result = serve_on_a_full_filesystem(
        workspace, ["--workspace", str(workspace), "--config", str(config)]
    )
    _check_refused(result, workspace / "replicas")


def test_a_database_on_a_full_disk_is_refused_by_name(tmp_path):
    """The workspace (database included) was migrated before the disk filled up."""
    workspace = tmp_path / "ws"
    result = serve_on_a_full_filesystem(
        workspace,
        ["--workspace", str(workspace)],
        prepare=[
            sys.executable,
            "-m",
            "routekeeper",
            "db",
            "upgrade",
            "--workspace",
            str(workspace),
        ],
    )
    _check_refused(result, workspace)
