"""/api/jobs on SQLite and PostgreSQL through the app (its job slot runs in it): bad input is
a 4xx naming the problem; a job runs to its result with numbered events, pages of them and
an SSE stream resumable after any number; cancel, failure and retry."""

import json
import time

import pytest
from fastapi.testclient import TestClient

from routekeeper.server.app import create_app
from routekeeper.settings import load_settings


def _settings(state_settings, **jobs):
    return load_settings(
        None,
        workspace=state_settings.workspace,
        overrides={
            "state": state_settings.state.model_dump(),
            "jobs": {"heartbeat_seconds": 0.2, "lease_seconds": 2, "poll_ms": 50, **jobs},
        },
    )


@pytest.fixture
def client(state_settings):
    with TestClient(create_app(_settings(state_settings))) as client:
        deadline = time.monotonic() + 20
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, client.get("/readyz").json()
            time.sleep(0.02)
        yield client


def _submit(client, **params):
    response = client.post("/api/jobs", json={"kind": "count", "params": params})
    assert response.status_code == 201, response.text
    return response.json()


def _until(client, job_id, *statuses, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.02)


def _stream(client, job_id, last_event_id=None):
    headers = {} if last_event_id is None else {"last-event-id": str(last_event_id)}
    events = []
    with client.stream("GET", f"/api/jobs/{job_id}/stream", headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        ids = []
        for line in response.iter_lines():
            if line.startswith("id: "):
                ids.append(int(line[4:]))
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    assert ids == [e["seq"] for e in events]
    return events


@pytest.mark.parametrize(
    "body,status,param",
    [
        ({"kind": "nope", "params": {}}, 400, "kind"),
        ({"kind": "count", "params": {"to": "ten"}}, 400, "params.to"),
        ({"kind": "count", "params": {"to": -1}}, 400, "params.to"),
        ({"kind": "count", "params": {"steps": 3}}, 400, "params.steps"),
        ({"kind": "count", "params": [1]}, 400, "params"),
        ({"kind": "count", "params": {}, "extra": 1}, 400, "extra"),
        ({"params": {}}, 400, "kind"),
    ],
)
def test_bad_submissions_are_a_400_naming_the_problem(client, body, status, param):
    response = client.post("/api/jobs", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert param in error["message"]
    assert any(p["param"] == param for p in error["details"]["problems"])
    assert client.get("/api/jobs").json()["data"] == []


def test_unknown_and_malformed_job_ids(client):
    assert client.get("/api/jobs/job_00000000000000000000000000").status_code == 404
    assert client.post("/api/jobs/job_00000000000000000000000000/cancel").status_code == 404
    assert client.get("/api/jobs/nope").status_code == 400
    assert client.get("/api/jobs?nope=1").status_code == 400
    job = _submit(client, to=1)
    response = client.get(f"/api/jobs/{job['id']}/stream", headers={"last-event-id": "x"})
    assert response.status_code == 400 and "last-event-id" in response.json()["error"]["message"]


def test_a_job_runs_to_its_result_and_its_events_resume_after_any_number(client):
    job = _submit(client, to=6, checkpoint_every=2)
    events = _stream(client, job["id"])
    done = client.get(f"/api/jobs/{job['id']}").json()
    assert done["status"] == "succeeded" and done["attempt"] == 1
    assert done["result"] == {"counted": 6, "resumed_from": 0, "attempt": 1}
    assert done["progress"] == {"done": 6, "total": 6, "unit": "steps", "message": None}
    assert [e["seq"] for e in events] == list(range(1, done["last_event"] + 1))
    assert events[0]["type"] == "job.submitted" and events[-1]["type"] == "job.succeeded"
    assert sum(e["type"] == "job.checkpoint" for e in events) == 3
    for after in (0, 1, 5, len(events) - 1, len(events)):
        assert _stream(client, job["id"], after) == events[after:]
    pages, after = [], None
    while True:
        query = {"limit": 4, **({"after": after} if after else {})}
        page = client.get(f"/api/jobs/{job['id']}/events", params=query).json()
        pages += page["data"]
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert pages == events
    listed = client.get("/api/jobs", params={"status": "succeeded", "kind": "count"}).json()
    assert [j["id"] for j in listed["data"]] == [job["id"]]
    metrics = client.get("/metrics").text
    for family in ("jobs_queued", "jobs_running", "job_lease_expiries_total"):
        assert f"routekeeper_{family} " in metrics
    status = {row["name"]: row for row in client.get("/api/status").json()["surfaces"]}
    assert status["jobs"]["rows"] >= 1


def test_cancel_stops_a_running_job_and_retry_resumes_it_from_its_checkpoint(client):
    job = _submit(client, to=10_000, delay_ms=20, checkpoint_every=5)
    while client.get(f"/api/jobs/{job['id']}").json()["progress"]["done"] < 10:
        time.sleep(0.02)
    cancelling = client.post(f"/api/jobs/{job['id']}/cancel")
    assert cancelling.status_code == 200 and cancelling.json()["status"] in (
        "cancelling",
        "cancelled",
    )
    cancelled = _until(client, job["id"], "cancelled")
    assert cancelled["lease_owner"] is None
    assert client.post(f"/api/jobs/{job['id']}/cancel").status_code == 409
    checkpoint = cancelled["checkpoint"]["done"]
    retried = client.post(f"/api/jobs/{job['id']}/retry").json()
    assert retried["status"] == "queued" and retried["id"] == job["id"]
    running = _until(client, job["id"], "running")
    assert running["attempt"] == 2
    client.post(f"/api/jobs/{job['id']}/cancel")
    again = _until(client, job["id"], "cancelled")
    events = _stream(client, job["id"])
    started = [e for e in events if e["type"] == "job.started"]
    assert [e["data"]["resumed"] for e in started] == [False, True]
    assert again["progress"]["done"] >= checkpoint
    queued = _submit(client, to=1000, delay_ms=20)
    # A queued job cancels at once (the slot may take it first: then it is cancelling; it
    # has too many steps to finish before the cancel arrives).
    assert client.post(f"/api/jobs/{queued['id']}/cancel").json()["status"] in (
        "cancelled",
        "cancelling",
    )


def test_a_failed_job_is_retried_with_attempt_plus_one(client):
    job = _submit(client, to=4, fail_at=3, checkpoint_every=1)
    failed = _until(client, job["id"], "failed")
    assert "fail_at" in failed["error"] and failed["checkpoint"] == {"done": 2}
    assert client.post(f"/api/jobs/{job['id']}/retry").status_code == 200
    done = _until(client, job["id"], "succeeded")
    assert done["attempt"] == 2 and done["error"] is None
    assert done["result"] == {"counted": 4, "resumed_from": 2, "attempt": 2}
    assert client.post(f"/api/jobs/{job['id']}/retry").status_code == 409


@pytest.mark.exclusive
def test_cancel_commits_cancelled_within_heartbeat_plus_one_second(state_settings):
    settings = _settings(state_settings, heartbeat_seconds=1.0, lease_seconds=3)
    with TestClient(create_app(settings)) as client:
        while client.get("/readyz").status_code != 200:
            time.sleep(0.02)
        job = _submit(client, to=1000, delay_ms=50)
        _until(client, job["id"], "running")
        asked = time.monotonic()
        assert client.post(f"/api/jobs/{job['id']}/cancel").status_code == 200
        _until(client, job["id"], "cancelled")
        assert time.monotonic() - asked <= 1.0 + 1.0


@pytest.mark.parametrize(
    "raw",
    [
        # a lone surrogate in a prompt, in a params key, in a dataset path; NaN; a path too
        # long for the file system; a path the file system cannot encode
        '{"kind": "evaluation", "params": {"dataset": [{"prompt": "hi \\ud800", '
        '"expected_decision": "x"}]}}',
        '{"kind": "count", "params": {"\\ud800": 1}}',
        '{"kind": "evaluation", "params": {"dataset_path": "\\ud800"}}',
        '{"kind": "count", "params": {"to": NaN}}',
        '{"kind": "evaluation", "params": {"dataset_path": "' + "a" * 5000 + '"}}',
    ],
)
def test_params_no_store_can_hold_are_a_400_and_store_nothing(client, raw):
    response = client.post(
        "/api/jobs", content=raw.encode(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["message"]
    listed = client.get("/api/jobs")
    assert listed.status_code == 200 and listed.json()["data"] == []
