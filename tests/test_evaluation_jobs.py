"""Evaluation jobs through ``/api/jobs`` on a fresh SQLite workspace and a fresh PostgreSQL
database: an evaluation routes every item with the configuration it was submitted under,
sends items to the chosen model when asked (as the router would: the decision's system prompt
included), stores one result per item and ends with its metrics; bad params are a 400 naming
the problem."""

import json
import time

import pytest
from fastapi.testclient import TestClient

from routekeeper.server.app import create_app
from routekeeper.settings import load_settings
from routekeeper.testing import FakeUpstream

SYSTEM = "You are a careful senior software engineer."


def routing(backend):
    return {
        "models": [{"name": "small", "backend": backend}, {"name": "large", "backend": backend}],
        "signals": {"keywords": [{"name": "code", "any": ["python"]}]},
        "decisions": [
            {
                "name": "coding",
                "priority": 10,
                "when": "keywords:code",
                "model": "large",
                "plugins": {"system_prompt": {"mode": "prepend", "text": SYSTEM}},
            },
            {"name": "default", "model": "small"},
        ],
        "auto_model_names": ["auto"],
    }


def client_for(state_settings, backend, **overrides):
    settings = load_settings(
        None,
        workspace=state_settings.workspace,
        overrides={
            "state": state_settings.state.model_dump(),
            "jobs": {"heartbeat_seconds": 0.2, "lease_seconds": 1, "poll_ms": 20},
            **routing(backend),
            **overrides,
        },
    )
    return TestClient(create_app(settings))


def wait_ready(client):
    deadline = time.monotonic() + 20
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, client.get("/readyz").json()
        time.sleep(0.02)


def finished(client, job_id, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "crashed", "cancelled"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.02)


def results(client, job_id, **params):
    out, after = [], None
    while True:
        query = {"limit": 7, **params, **({"after": after} if after is not None else {})}
        page = client.get(f"/api/jobs/{job_id}/results", params=query)
        assert page.status_code == 200, page.text
        body = page.json()
        out += body["data"]
        if not body["has_more"]:
            return out
        after = body["last_id"]


DATASET = [
    {"prompt": "fix my python script", "expected_decision": "coding", "expected_model": "large"},
    {"prompt": "hello there", "expected_decision": "default"},
    {"prompt": "python again", "expected_decision": "default"},  # wrong: routes to coding
    {"prompt": "weather?", "expected_model": "large"},  # wrong: routes to small
    {"prompt": "tell me a joke \x00", "expected_model": "small"},
    # 256 characters, 512 as PostgreSQL stores them: a wrong expectation, stored as sent.
    {"prompt": "one more", "expected_decision": "\x00" * 256},
]


def test_an_inline_evaluation_routes_sends_and_scores_every_item(state_settings):
    with FakeUpstream(models=["m"]) as upstream:
        backend = {"type": "openai", "base_url": upstream.base_url, "model": "m"}
        with client_for(state_settings, backend) as client:
            wait_ready(client)
            submitted = client.post(
                "/api/jobs",
                json={
                    "kind": "evaluation",
                    "params": {"dataset": DATASET, "send_to_model": True, "checkpoint_every": 2},
                },
            )
            assert submitted.status_code == 201, submitted.text
            job = finished(client, submitted.json()["id"])
            assert job["status"] == "succeeded", job
            assert job["checkpoint"] == {"next_index": 6}
            metrics = job["result"]
            assert (metrics["total"], metrics["invalid"], metrics["correct"]) == (6, 0, 3)
            assert metrics["accuracy"] == 3 / 6
            assert metrics["decisions"]["confusion"] == {
                "\x00" * 256: {"default": 1},
                "coding": {"coding": 1},
                "default": {"coding": 1, "default": 1},
            }
            assert metrics["models"]["confusion"] == {
                "large": {"large": 1, "small": 1},
                "small": {"small": 1},
            }
            assert metrics["upstream"] == {"sent": 6, "errors": 0}
            assert metrics["routing_ms"]["p99"] >= metrics["routing_ms"]["p50"] >= 0
            stored = results(client, job["id"])
            assert [r["item_index"] for r in stored] == [0, 1, 2, 3, 4, 5]
            assert [r["correct"] for r in stored] == [True, True, False, False, True, False]
            assert [r["decision"] for r in stored] == [
                "coding",
                "default",
                "coding",
                "default",
                "default",
                "default",
            ]
            assert stored[5]["expected_decision"] == "\x00" * 256
            assert stored[0]["decision_correct"] is True and stored[0]["model_correct"] is True
            assert stored[1]["model_correct"] is None
            assert all(r["sent_to_model"] and r["upstream_error"] is None for r in stored)
            wrong = results(client, job["id"], correct="false")
            assert [r["item_index"] for r in wrong] == [2, 3, 5]
        # Sent as the router sends: the coding decision's system prompt comes first.
        bodies = [r.body for r in upstream.requests]
        assert len(bodies) == 6
        by_prompt = {b["messages"][-1]["content"]: b for b in bodies}
        assert by_prompt["fix my python script"]["messages"][0] == {
            "role": "system",
            "content": SYSTEM,
        }
        assert len(by_prompt["hello there"]["messages"]) == 1
        assert by_prompt["tell me a joke \x00"]["messages"][0]["content"] == "tell me a joke \x00"


def test_a_file_evaluation_keeps_malformed_lines_as_failed_items(state_settings):
    directory = state_settings.workspace / "datasets"
    directory.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps(DATASET[0]),
        "not json",
        json.dumps({"prompt": "x"}),
        json.dumps(DATASET[1]),
        # Valid JSON that is not Unicode text: the line's reason must still be storable.
        '{"prompt": "x", "expected_model": "m", "\\ud800": 1}',
        '{"prompt": "x", "expected_decision": "\\udfff"}',
    ]
    (directory / "set.jsonl").write_text("\n".join(lines))
    with client_for(state_settings, {"type": "echo"}) as client:
        wait_ready(client)
        submitted = client.post(
            "/api/jobs", json={"kind": "evaluation", "params": {"dataset_path": "set.jsonl"}}
        )
        assert submitted.status_code == 201, submitted.text
        job = finished(client, submitted.json()["id"])
        assert job["status"] == "succeeded", job
        metrics = job["result"]
        assert (metrics["total"], metrics["invalid"], metrics["correct"]) == (6, 4, 2)
        assert metrics["upstream"] == {"sent": 0, "errors": 0}
        stored = results(client, job["id"])
        assert [r["valid"] for r in stored] == [True, False, False, True, False, False]
        assert stored[4]["error"] == (
            "line 5: \\ud800: unknown field (an item has prompt, expected_decision, expected_model)"
        )
        assert "lone surrogate" in stored[5]["error"]
        assert stored[1]["error"].startswith("line 2: not JSON")
        assert stored[2]["error"] == (
            "line 3: an item needs expected_decision or expected_model (or both)"
        )
        assert not any(r["sent_to_model"] for r in stored)


def test_upstream_failures_are_recorded_per_item(state_settings):
    with FakeUpstream(models=["m"], error_status=503) as upstream:
        backend = {"type": "openai", "base_url": upstream.base_url, "model": "m"}
        with client_for(state_settings, backend) as client:
            wait_ready(client)
            submitted = client.post(
                "/api/jobs",
                json={
                    "kind": "evaluation",
                    "params": {"dataset": DATASET[:2], "send_to_model": True, "concurrency": 2},
                },
            )
            job = finished(client, submitted.json()["id"])
            assert job["status"] == "succeeded", job
            assert job["result"]["upstream"] == {"sent": 2, "errors": 2}
            assert job["result"]["correct"] == 2
            stored = results(client, job["id"])
            assert all(r["upstream_error"] for r in stored)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"kind": "evaluations", "params": {}}, "kind"),
        ({"kind": "evaluation", "params": {}}, "params.dataset"),
        (
            {"kind": "evaluation", "params": {"dataset": [DATASET[0], {"prompt": "p"}]}},
            "params.dataset[1]",
        ),
        (
            {
                "kind": "evaluation",
                "params": {"dataset": [DATASET[0], {**DATASET[1], "expected_decision": 5}]},
            },
            "params.dataset[1].expected_decision",
        ),
        (
            {"kind": "evaluation", "params": {"dataset_path": "../../etc/passwd"}},
            "params.dataset_path",
        ),
        ({"kind": "evaluation", "params": {"dataset_path": "/etc/passwd"}}, "params.dataset_path"),
        ({"kind": "evaluation", "params": {"dataset_path": "nope.jsonl"}}, "params.dataset_path"),
        (
            {"kind": "evaluation", "params": {"dataset": [DATASET[0]], "checkpoint_every": 0}},
            "params.checkpoint_every",
        ),
    ],
)
def test_bad_params_are_a_400_naming_the_problem(state_settings, body, param):
    with client_for(state_settings, {"type": "echo"}, jobs={"concurrency": 0}) as client:
        wait_ready(client)
        answer = client.post("/api/jobs", json=body)
        assert answer.status_code == 400, answer.text
        error = answer.json()["error"]
        assert param in error["message"], error
        assert client.get("/api/jobs").json()["data"] == []


def test_results_of_an_unknown_job_are_a_404(state_settings):
    with client_for(state_settings, {"type": "echo"}, jobs={"concurrency": 0}) as client:
        wait_ready(client)
        assert client.get(f"/api/jobs/job_{'0' * 26}/results").status_code == 404
        assert client.get("/api/jobs/nope/results").status_code in (400, 404, 422)
        assert client.get(f"/api/jobs/job_{'0' * 26}/results?after=-1").status_code == 400


def test_a_cancelled_evaluation_sends_nothing_more_and_a_retry_finishes_it(state_settings):
    dataset = [{"prompt": f"item {i}", "expected_decision": "default"} for i in range(60)]
    with FakeUpstream(models=["m"], latency_ms=30) as upstream:
        backend = {"type": "openai", "base_url": upstream.base_url, "model": "m"}
        with client_for(state_settings, backend) as client:
            wait_ready(client)
            submitted = client.post(
                "/api/jobs",
                json={
                    "kind": "evaluation",
                    "params": {"dataset": dataset, "send_to_model": True, "checkpoint_every": 10},
                },
            )
            job_id = submitted.json()["id"]
            assert upstream.wait_for_requests(15, timeout=30)
            assert client.post(f"/api/jobs/{job_id}/cancel").status_code == 200
            cancelled = finished(client, job_id)
            assert cancelled["status"] == "cancelled", cancelled
            sent = len(upstream.requests)
            assert sent < len(dataset)
            assert client.get(f"/api/jobs/{job_id}/results").status_code == 200
            assert len(upstream.requests) == sent  # nothing goes to the model once cancelled
            retried = client.post(f"/api/jobs/{job_id}/retry")
            assert retried.status_code == 200, retried.text
            done = finished(client, job_id)
            assert done["status"] == "succeeded", done
            assert done["attempt"] == cancelled["attempt"] + 1
            assert done["result"]["total"] == done["result"]["correct"] == len(dataset)
            stored = results(client, job_id)
            assert [r["item_index"] for r in stored] == list(range(len(dataset)))
        # The retry resumed at the checkpoint: at most one chunk (10 items) and the one in
        # flight went to the model again.
        prompts = [r.body["messages"][-1]["content"] for r in upstream.requests]
        assert set(prompts) == {item["prompt"] for item in dataset}
        assert len(prompts) - len(dataset) <= 10 + 1
        assert (cancelled["checkpoint"] or {}).get("next_index", 0) <= sent


def test_results_written_between_frequent_heartbeats_never_wait_on_the_loop(state_settings):
    """Each chunk's results are written while the job's heartbeats renew its lease from the
    same event loop (here every 20 ms, with a chunk per item): the write must not block the
    loop, or on PostgreSQL it waits forever for the row lock of a heartbeat that cannot
    commit."""
    dataset = [{"prompt": f"item {i}", "expected_decision": "default"} for i in range(200)]
    jobs = {"heartbeat_seconds": 0.02, "lease_seconds": 1, "poll_ms": 20}
    with client_for(state_settings, {"type": "echo"}, jobs=jobs) as client:
        wait_ready(client)
        submitted = client.post(
            "/api/jobs",
            json={"kind": "evaluation", "params": {"dataset": dataset, "checkpoint_every": 1}},
        )
        job = finished(client, submitted.json()["id"])
        assert job["status"] == "succeeded", job
        assert job["result"]["correct"] == len(dataset)


def test_an_evaluation_under_a_configuration_that_routes_nothing_fails(state_settings):
    with client_for(state_settings, {"type": "echo"}, decisions=[], auto_model_names=[]) as client:
        wait_ready(client)
        submitted = client.post(
            "/api/jobs", json={"kind": "evaluation", "params": {"dataset": DATASET}}
        )
        assert submitted.status_code == 201, submitted.text
        job = finished(client, submitted.json()["id"])
        assert job["status"] == "failed", job
        assert "no default decision" in job["error"]
        assert results(client, job["id"]) == []
