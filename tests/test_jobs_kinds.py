"""What the runner gives a kind, through the app on SQLite and PostgreSQL, with a kind of this
test's own that asks a model (registered in ``compose.KINDS`` for the test): a job routes
with the routing configuration it was submitted under, even after a restart with another
one; a cancel cancels the upstream call in flight."""

import asyncio
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from routekeeper import compose
from routekeeper.contract.errors import InvalidRequest
from routekeeper.server.app import create_app
from routekeeper.settings import load_settings
from routekeeper.testing import HandlerServer, Reply


class AskKind:
    """Asks the model ``model`` ``times`` times; returns the answers."""

    name = "ask"

    def __init__(self) -> None:
        self.validated_on_a_loop: list[bool] = []

    def validate(self, params: dict[str, Any], ctx: Any) -> dict[str, Any]:
        try:
            asyncio.get_running_loop()
            self.validated_on_a_loop.append(True)
        except RuntimeError:
            self.validated_on_a_loop.append(False)
        times = params.get("times", 1)
        if not isinstance(times, int) or not 1 <= times <= 100:
            raise InvalidRequest("must be 1-100", param="params.times")
        return {"model": str(params.get("model", "m")), "times": times}

    async def run(self, job: Any) -> dict[str, Any]:
        answers = []
        for n in range(job.input["times"]):
            job.check_cancelled()
            body = {"model": job.input["model"], "messages": [{"role": "user", "content": "q"}]}
            plan = await job.chat.plan(body, {})
            reply = await job.chat.transport(plan).complete(plan.body)
            answers.append(reply["choices"][0]["message"]["content"])
            await job.progress(n + 1, job.input["times"], "asks")
        return {"answers": answers}


@pytest.fixture(autouse=True)
def ask_kind(monkeypatch):
    kind = AskKind()
    monkeypatch.setitem(compose.KINDS, "ask", kind)
    return kind


def _answering(text, delay=0.0):
    def handler(request):
        return Reply(
            200,
            {
                "id": "c",
                "object": "chat.completion",
                "created": 0,
                "model": "up",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
            },
            delay=delay,
        )

    return handler


def _settings(state_settings, server, concurrency=1, heartbeat=0.5):
    return load_settings(
        None,
        workspace=state_settings.workspace,
        overrides={
            "state": state_settings.state.model_dump(),
            "models": [
                {
                    "name": "m",
                    "backend": {"type": "openai", "base_url": f"{server.url}/v1", "model": "up"},
                }
            ],
            "decisions": [{"name": "default", "model": "m"}],
            "jobs": {
                "concurrency": concurrency,
                "heartbeat_seconds": heartbeat,
                "lease_seconds": 3,
                "poll_ms": 50,
            },
        },
    )


def _ready(client):
    deadline = time.monotonic() + 20
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.02)


def _until(client, job_id, status, timeout=30):
    deadline = time.monotonic() + timeout
    while (job := client.get(f"/api/jobs/{job_id}").json())["status"] != status:
        assert time.monotonic() < deadline and job["status"] != "failed", job
        time.sleep(0.02)
    return job


def test_a_kind_validates_off_the_event_loop(state_settings, ask_kind):
    """A kind may read a file while it validates (an evaluation's dataset): it runs on a worker
    thread, so the loop's requests and heartbeats go on meanwhile; its refusal is still a 400
    naming the field."""
    with HandlerServer(_answering("ok")) as up:
        with TestClient(create_app(_settings(state_settings, up, concurrency=0))) as client:
            _ready(client)
            ok = client.post("/api/jobs", json={"kind": "ask", "params": {"times": 1}})
            assert ok.status_code == 201, ok.text
            bad = client.post("/api/jobs", json={"kind": "ask", "params": {"times": 0}})
            assert bad.status_code == 400, bad.text
            problems = bad.json()["error"]["details"]["problems"]
            assert [p["param"] for p in problems] == ["params.times"]
    assert ask_kind.validated_on_a_loop == [False, False]


def test_a_job_routes_with_the_configuration_it_was_submitted_under(state_settings):
    with HandlerServer(_answering("old")) as old, HandlerServer(_answering("new")) as new:
        with TestClient(create_app(_settings(state_settings, old, concurrency=0))) as client:
            _ready(client)
            submitted = client.post("/api/jobs", json={"kind": "ask", "params": {"times": 2}})
            assert submitted.status_code == 201, submitted.text
            job_id = submitted.json()["id"]
        # Restarted with another upstream under the same model name: the job keeps its own.
        with TestClient(create_app(_settings(state_settings, new))) as client:
            _ready(client)
            done = _until(client, job_id, "succeeded")
            assert done["result"] == {"answers": ["old", "old"]}
            assert done["routing_hash"] == submitted.json()["routing_hash"]
            fresh = client.post("/api/jobs", json={"kind": "ask", "params": {}}).json()
            assert fresh["routing_hash"] != done["routing_hash"]
            assert _until(client, fresh["id"], "succeeded")["result"] == {"answers": ["new"]}
        assert len(old.seen) == 2 and len(new.seen) == 1


@pytest.mark.exclusive  # the upstream answers after 30 s: the cancel must not wait for it
def test_cancel_cancels_the_upstream_call_in_flight(state_settings):
    with HandlerServer(_answering("late", delay=30)) as slow:
        settings = _settings(state_settings, slow, heartbeat=1.0)
        with TestClient(create_app(settings)) as client:
            _ready(client)
            job_id = client.post("/api/jobs", json={"kind": "ask", "params": {"times": 5}}).json()[
                "id"
            ]
            _until(client, job_id, "running")
            deadline = time.monotonic() + 10
            while not slow.seen:  # the call is in flight
                assert time.monotonic() < deadline
                time.sleep(0.02)
            asked = time.monotonic()
            client.post(f"/api/jobs/{job_id}/cancel")
            cancelled = _until(client, job_id, "cancelled")
            assert time.monotonic() - asked <= 1.0 + 1.0
            assert cancelled["progress"]["done"] == 0
            time.sleep(1.0)
            assert len(slow.seen) == 1  # nothing more went to the model after cancelled
