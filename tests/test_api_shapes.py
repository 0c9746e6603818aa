"""The API conventions every later endpoint follows: /api lists and errors, /v1 errors."""

import time

import pytest
from fastapi.testclient import TestClient

from routekeeper.contract import SURFACES
from routekeeper.server.app import create_app
from routekeeper.storage.recovery import recovery_steps
from routekeeper.storage.state import StateStorage


@pytest.fixture
def client(state_settings):
    """The app on a fresh SQLite workspace and on a fresh PostgreSQL database."""
    app = create_app(state_settings)
    with TestClient(app) as client:
        deadline = time.monotonic() + 20
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, client.get("/readyz").json()
            time.sleep(0.02)
        yield client


def assert_api_error(response, status, code):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert isinstance(body["error"]["details"], dict)
    return body["error"]


def assert_openai_error(response, status):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert isinstance(body["error"]["type"], str)
    return body["error"]


def assert_api_list(body):
    assert set(body) == {"data", "first_id", "last_id", "has_more"}
    assert isinstance(body["data"], list) and isinstance(body["has_more"], bool)
    if body["data"]:
        assert body["first_id"] == body["data"][0]["id"]
        assert body["last_id"] == body["data"][-1]["id"]
    else:
        assert body["first_id"] is None and body["last_id"] is None


def test_api_lists_have_the_documented_shape(client):
    for path in ("/api/replicas", "/api/runtime/events", "/api/replicas?phase=stopped"):
        response = client.get(path)
        assert response.status_code == 200
        assert_api_list(response.json())
    events = client.get("/api/runtime/events?limit=2&order=asc").json()
    assert len(events["data"]) == 2 and events["has_more"] is True
    following = client.get(
        f"/api/runtime/events?limit=2&order=asc&after={events['last_id']}"
    ).json()
    assert following["data"][0]["id"] > events["last_id"]


def test_api_errors_have_the_documented_shape(client):
    assert_api_error(client.get("/api/nothing-here"), 404, "not_found")
    error = assert_api_error(client.get("/api/replicas?limit=1000"), 400, "invalid_request")
    assert "limit" in error["message"]
    assert_api_error(client.get("/api/replicas?order=sideways"), 400, "invalid_request")
    assert_api_error(client.get("/api/runtime/events?after=abc"), 400, "invalid_request")
    assert_api_error(client.post("/api/status"), 405, "method_not_allowed")
    assert_api_error(client.get("/api/replicas?after=rep_a&before=rep_b"), 400, "invalid_request")


def test_v1_errors_use_the_openai_envelope(client):
    error = assert_openai_error(client.get("/v1/nothing-here"), 404)
    assert error["type"] == "invalid_request_error" and error["code"] == "not_found"
    assert_openai_error(client.post("/v1"), 404)


def test_status_lists_this_replica_and_every_surface(client, state_settings):
    body = client.get("/api/status").json()
    me = [r for r in body["replicas"] if r["current"]]
    assert len(me) == 1 and me[0]["id"] == body["replica_id"] and me[0]["phase"] == "ready"
    for key in ("id", "phase", "started_at", "heartbeat_at"):
        assert key in me[0]
    surfaces = {s["name"]: s for s in body["surfaces"]}
    assert set(surfaces) == set(SURFACES)
    for name, s in surfaces.items():
        assert s["class"] == SURFACES[name].state_class.value
        assert s["owner"] == SURFACES[name].owner.value
        assert s["backend"] == "main" and s["backend_type"] in ("sqlite", "postgres")
        assert s["ephemeral"] is False
    assert surfaces["runtime_status"]["rows"] == 1
    # starting, migrating, recovering, ready, and one recovery.completed per recovery step
    steps = recovery_steps(StateStorage(state_settings))
    assert surfaces["runtime_events"]["rows"] == 4 + len(steps)
    assert surfaces["router_replay"]["rows"] == 0


def test_readyz_and_livez(client):
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["phase"] == "ready"
    assert client.get("/livez").json()["status"] == "alive"


def test_openapi_has_stable_operation_ids(client):
    spec = client.get("/openapi.json").json()
    ids = {op["operationId"] for path in spec["paths"].values() for op in path.values()}
    assert {"get_status", "list_replicas", "list_runtime_events", "livez", "readyz"} <= ids


@pytest.mark.parametrize(
    "path",
    [
        "/api/replicas?after=%00",
        "/api/replicas?before=junk",
        "/api/replicas?after=",
        "/api/replicas?after=rep_" + "0" * 25,
        "/api/runtime/events?replica_id=%00",
        "/api/runtime/events?replica_id=rep_x",
        "/api/runtime/events?kind=nope",
        "/api/runtime/events?after=-1",
        "/api/runtime/events?after=99999999999999999999999",
        "/api/replicas?phase=sleeping",
    ],
)
def test_malformed_input_is_a_400_never_an_empty_page_or_a_500(client, path):
    assert_api_error(client.get(path), 400, "invalid_request")


def test_a_well_formed_unknown_cursor_pages_normally(client):
    body = client.get("/api/replicas?order=asc&after=rep_" + "Z" * 26).json()
    assert body["data"] == [] and body["has_more"] is False


def test_an_oversized_body_is_a_413_in_each_envelope(tmp_path):
    from routekeeper.settings import load_settings

    settings = load_settings(
        None, workspace=tmp_path, overrides={"server": {"max_request_bytes": 2048}}
    )
    with TestClient(create_app(settings)) as small:
        big = {"model": "x", "messages": [{"role": "user", "content": "a" * 5000}]}
        response = small.post("/v1/chat/completions", json=big)
        assert_openai_error(response, 413)
        response = small.post("/api/routing/explain", json={"prompt": "a" * 5000})
        assert_api_error(response, 413, "payload_too_large")

        def chunked():  # no Content-Length: counted while it streams in
            yield b'{"prompt": "'
            for _ in range(10):
                yield b"a" * 500
            yield b'"}'

        response = small.post(
            "/api/routing/explain", content=chunked(), headers={"content-type": "application/json"}
        )
        assert_api_error(response, 413, "payload_too_large")


def test_status_lists_every_live_replica_beyond_the_newest_twenty(client, state_settings):
    """Workers of a `serve --workers N` are replicas: a live one older than the 20 newest
    rows (restarts leave many stopped ones) is still listed."""
    import asyncio
    import fcntl
    import os

    from routekeeper.contract.ids import new_id
    from routekeeper.contract.runtime import PhaseChange, ReplicaPhase, ReplicaRecord
    from routekeeper.storage.types import utcnow

    live_id = new_id("rep")
    time.sleep(0.01)  # ids are time-ordered by the millisecond
    stopped_ids = [new_id("rep") for _ in range(25)]

    async def register() -> None:
        storage = StateStorage(state_settings)
        await storage.open()
        try:
            for rid in (live_id, *stopped_ids):
                now = utcnow()
                phase = ReplicaPhase.READY if rid == live_id else ReplicaPhase.STOPPED
                record = ReplicaRecord(
                    id=rid,
                    phase=phase,
                    host="h",
                    pid=1,
                    listen=None,
                    version="t",
                    started_at=now,
                    heartbeat_at=now,
                    updated_at=now,
                )
                await storage.runtime.register(record, [PhaseChange(None, phase, now)])
        finally:
            await storage.close()

    # On SQLite hold its flock as a live replica would, or the sweep records it crashed.
    lock_dir = state_settings.workspace / "replicas"
    lock_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_dir / f"{live_id}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        asyncio.run(register())
        body = client.get("/api/status").json()
    finally:
        os.close(fd)
    ids = [r["id"] for r in body["replicas"]]
    assert body["replicas_has_more"] is True
    assert live_id in ids and body["replica_id"] in ids
    assert ids == sorted(ids, reverse=True)  # newest first
    assert len(ids) == 22  # the 20 newest, the live one below them, this replica
