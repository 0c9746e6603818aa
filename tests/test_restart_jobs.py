"""Kill-and-restart tests of durable jobs and their events, through real server and worker
processes: a job killed mid-run resumes from its checkpoint as attempt 2 and succeeds with
the right result; a stream resumed with Last-Event-ID gets every later event exactly once,
across a restart and across replicas (Redis pub/sub or PostgreSQL LISTEN/NOTIFY); a worker
killed while serve keeps running has its job finished by another worker."""

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import yaml

from routekeeper.testing import ServerProcess, WorkerProcess, shared_postgres_state

pytestmark = pytest.mark.slow

# Short periods so that a dead owner is found within seconds on both dialects.
FAST = {
    "runtime": {"heartbeat_seconds": 0.5, "stale_after_seconds": 2.0},
    "jobs": {"heartbeat_seconds": 0.5, "lease_seconds": 3.0, "poll_ms": 100},
}
COUNT = {"to": 60, "delay_ms": 50, "checkpoint_every": 5}


def _submit(server, **params):
    response = httpx.post(
        f"{server.url}/api/jobs", json={"kind": "count", "params": params}, timeout=10
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _job(server, job_id):
    response = httpx.get(f"{server.url}/api/jobs/{job_id}", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def _until(server, job_id, check, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        job = _job(server, job_id)
        if check(job):
            return job
        assert time.monotonic() < deadline, f"{job}\n{server.log_tail()}"
        time.sleep(0.05)


def _all_events(server, job_id):
    out, after = [], None
    while True:
        params = {"limit": 100, **({"after": after} if after else {})}
        response = httpx.get(f"{server.url}/api/jobs/{job_id}/events", params=params, timeout=10)
        page = response.json()
        out += page["data"]
        if not page["has_more"]:
            return out
        after = page["last_id"]


def _read_stream(server, job_id, *, last_event_id=None, stop_after=None, reading=None):
    """The stream's events (until it ends, or ``stop_after`` of them, then hang up);
    ``reading`` (a threading.Event) is set once the first event has arrived."""
    headers = {} if last_event_id is None else {"last-event-id": str(last_event_id)}
    events = []
    url = f"{server.url}/api/jobs/{job_id}/stream"
    with httpx.stream("GET", url, headers=headers, timeout=httpx.Timeout(10, read=30)) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
                if reading is not None:
                    reading.set()
                if stop_after is not None and len(events) >= stop_after:
                    break
    return events


def _check_resumed(job, events, *, killed_at_checkpoint):
    assert job["status"] == "succeeded", job
    assert job["attempt"] == 2
    assert job["result"]["counted"] == COUNT["to"]
    assert job["result"]["attempt"] == 2
    assert job["result"]["resumed_from"] >= killed_at_checkpoint
    assert [e["seq"] for e in events] == list(range(1, job["last_event"] + 1))
    started = [e for e in events if e["type"] == "job.started"]
    assert [(e["attempt"], e["data"]["resumed"]) for e in started] == [(1, False), (2, True)]
    requeued = [e for e in events if e["type"] == "job.requeued"]
    assert len(requeued) == 1 and requeued[0]["data"]["attempt"] == 1


@pytest.mark.restart(surface="jobs")
@pytest.mark.restart(surface="job_events")
def test_sigkill_mid_job_resumes_from_the_checkpoint_and_the_stream_resumes_exactly_once(
    server_factory,
):
    first = server_factory(**FAST).start()
    job_id = _submit(first, **COUNT)
    queued = _submit(first, to=1)  # behind the first in the one slot
    seen = _read_stream(first, job_id, stop_after=12)
    mid = _until(first, job_id, lambda j: (j["checkpoint"] or {}).get("done", 0) >= 10)
    first.kill()

    second = server_factory(**FAST).start()
    # Every acknowledged write is there (recovery may already have requeued the job).
    assert _job(second, job_id)["checkpoint"]["done"] >= mid["checkpoint"]["done"]
    rest = _read_stream(second, job_id, last_event_id=seen[-1]["seq"])
    job = _until(second, job_id, lambda j: j["status"] == "succeeded")
    events = _all_events(second, job_id)
    assert seen + rest == events  # every event exactly once, across the restart
    _check_resumed(job, events, killed_at_checkpoint=mid["checkpoint"]["done"])
    assert _until(second, queued, lambda j: j["status"] == "succeeded")["attempt"] == 1


def _write_config(path: Path, state: dict, **sections) -> Path:
    path.write_text(yaml.safe_dump({"state": state, **FAST, **sections}))
    return path


@pytest.mark.postgres
def test_a_killed_worker_s_job_is_resumed_by_another_while_serve_keeps_running(
    postgres_dsn, tmp_path
):
    state = shared_postgres_state(postgres_dsn)
    serve_config = _write_config(
        tmp_path / "serve.yaml", state, jobs={**FAST["jobs"], "concurrency": 0}
    )
    worker_config = _write_config(tmp_path / "worker.yaml", state)
    workspace = tmp_path / "ws"
    with ServerProcess(workspace=workspace, config=serve_config) as server:
        with WorkerProcess(workspace=workspace, config=worker_config) as worker:
            job_id = _submit(server, **COUNT)
            mid = _until(server, job_id, lambda j: (j["checkpoint"] or {}).get("done", 0) >= 10)
            assert mid["lease_owner"] == worker.replica_id
            worker.kill()
        with WorkerProcess(workspace=workspace, config=worker_config) as second:
            job = _until(server, job_id, lambda j: j["status"] == "succeeded")
            assert job["lease_owner"] is None
            events = _all_events(server, job_id)
            _check_resumed(job, events, killed_at_checkpoint=mid["checkpoint"]["done"])
            owners = [e["data"]["owner"] for e in events if e["type"] == "job.started"]
            assert owners == [worker.replica_id, second.replica_id]
            assert second.terminate() == 0  # a worker drains on SIGTERM like serve
        assert server.exit_code() is None  # serve ran throughout


@pytest.mark.postgres
@pytest.mark.parametrize("wakeups", ["redis", "postgres"])
def test_a_stream_resumed_on_another_replica_gets_every_later_event_once(
    postgres_dsn, tmp_path, wakeups
):
    """Replica A runs the job; a client reads part of its stream from replica B (which runs
    no jobs, so every event reaches it from A), hangs up, and resumes on A."""
    state = shared_postgres_state(postgres_dsn)
    extra = {"redis": {"url": "redis://127.0.0.1:6379/0"}} if wakeups == "redis" else {}
    runs = _write_config(tmp_path / "a.yaml", state, **extra)
    reads = _write_config(
        tmp_path / "b.yaml", state, jobs={**FAST["jobs"], "concurrency": 0}, **extra
    )
    workspace = tmp_path / "ws"
    with (
        ServerProcess(workspace=workspace, config=runs) as a,
        ServerProcess(workspace=workspace, config=reads) as b,
    ):
        job_id = _submit(b, to=40, delay_ms=20, checkpoint_every=4)
        first = _read_stream(b, job_id, stop_after=15)
        rest = _read_stream(a, job_id, last_event_id=first[-1]["seq"])
        job = _job(a, job_id)
        assert job["status"] == "succeeded"
        assert first + rest == _all_events(b, job_id)
        assert rest[-1]["type"] == "job.succeeded"
        # A stream that starts on B after the end gets everything and ends too.
        assert _read_stream(b, job_id) == first + rest


def test_sigterm_hands_a_running_job_back_without_using_an_attempt(server_factory):
    """An open stream ends when its replica drains; its client resumes on the next one."""
    first = server_factory(**FAST).start()
    job_id = _submit(first, **{**COUNT, "to": 40})
    _until(first, job_id, lambda j: (j["checkpoint"] or {}).get("done", 0) >= 5)
    with ThreadPoolExecutor(1) as pool:
        connected = threading.Event()
        reading = pool.submit(_read_stream, first, job_id, reading=connected)
        assert connected.wait(30)  # the stream is open before the signal
        assert first.terminate() == 0
        seen = reading.result(timeout=30)  # ended, not cut: no error
    assert seen and seen[-1]["type"] != "job.succeeded"

    second = server_factory(**FAST).start()
    rest = _read_stream(second, job_id, last_event_id=seen[-1]["seq"])
    job = _job(second, job_id)
    assert job["status"] == "succeeded"
    assert job["attempt"] == 2 and job["result"]["resumed_from"] >= 5
    events = _all_events(second, job_id)
    assert seen + rest == events
    requeued = [e for e in events if e["type"] == "job.requeued"]
    assert [e["data"]["reason"] for e in requeued] == ["owner_stopped"]
