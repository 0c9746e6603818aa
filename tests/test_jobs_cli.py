"""``routekeeper jobs ...`` against a real server: submit and watch to the end (the progress
bar is drawn from the stream), list, show, cancel, retry; a failing job makes watch exit 1."""

import json
import subprocess
import sys

import pytest
import yaml

from routekeeper.testing import ServerProcess

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("jobs-cli")
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump({"jobs": {"heartbeat_seconds": 0.5, "poll_ms": 50}}))
    with ServerProcess(workspace=root / "ws", config=config) as server:
        yield server


def _cli(server, *args):
    return subprocess.run(
        [sys.executable, "-m", "routekeeper", "jobs", *args, "--url", server.url],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_submit_watch_list_show(server):
    done = _cli(server, "submit", "count", "--params", '{"to": 30, "delay_ms": 5}', "--watch")
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.split()[1]
    assert f"{job_id}: succeeded" in done.stdout and "30/30" in done.stdout
    shown = _cli(server, "show", job_id, "--format", "json")
    assert json.loads(shown.stdout)["result"]["counted"] == 30
    listed = _cli(server, "list", "--status", "succeeded", "--format", "json")
    assert job_id in [j["id"] for j in json.loads(listed.stdout)["data"]]
    assert job_id in _cli(server, "list").stdout


def test_a_failed_job_fails_watch_and_retry_finishes_it(server):
    params = '{"to": 3, "fail_at": 2}'
    failed = _cli(server, "submit", "count", "--params", params, "--watch")
    assert failed.returncode == 1 and "failed" in failed.stdout
    job_id = failed.stdout.split()[1]
    retried = _cli(server, "retry", job_id, "--watch")
    assert retried.returncode == 0, retried.stdout + retried.stderr
    assert f"{job_id}: succeeded" in retried.stdout


def test_cancel_and_bad_input(server):
    submitted = _cli(server, "submit", "count", "--params", '{"to": 100000, "delay_ms": 10}')
    job_id = submitted.stdout.split()[1]
    assert _cli(server, "cancel", job_id).returncode == 0
    watched = _cli(server, "watch", job_id)
    assert watched.returncode == 1 and f"{job_id}: cancelled" in watched.stdout
    refused = _cli(server, "submit", "count", "--params", '{"to": "x"}')
    assert refused.returncode == 1 and "params.to" in refused.stderr
    unknown = _cli(server, "submit", "nope")
    assert unknown.returncode == 1 and "unknown job kind" in unknown.stderr
