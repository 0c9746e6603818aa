"""Kill-and-restart tests of an evaluation of 2,000 items read from a JSONL file, on SQLite and
PostgreSQL, through the real server: SIGKILL mid-run, restart, and attempt 2 resumes from the
checkpoint and ends ``succeeded`` with exactly one result per item and the right counts; after
the resume at most ``checkpoint_every`` items (plus the one in flight) reach the model again.
The same with the job on a ``routekeeper worker`` killed while ``serve`` keeps running."""

import json
import time
from collections import Counter

import httpx
import pytest
import yaml

from routekeeper.testing import FakeUpstream, ServerProcess, WorkerProcess, shared_postgres_state

pytestmark = pytest.mark.slow

ITEMS = 2000
EVERY = 50
# Items the server counts as malformed (lines of the file that are not items).
MALFORMED = {7: "{not json", 1234: json.dumps({"prompt": "no expectation"})}


def routing(upstream):
    backend = {"type": "openai", "base_url": upstream.base_url, "model": "m"}
    return {
        "models": [{"name": "small", "backend": backend}, {"name": "large", "backend": backend}],
        "signals": {"keywords": [{"name": "code", "any": ["python"]}]},
        "decisions": [
            {"name": "coding", "priority": 10, "when": "keywords:code", "model": "large"},
            {"name": "default", "model": "small"},
        ],
        "auto_model_names": ["auto"],
        "runtime": {"heartbeat_seconds": 0.5, "stale_after_seconds": 2.0},
        "jobs": {"heartbeat_seconds": 0.5, "lease_seconds": 2, "poll_ms": 100},
    }


def dataset_lines():
    """Item i asks about python when i % 4 == 0 (routed to coding/large). Every item expects
    a decision; one in five expects the wrong one; every tenth also expects a model."""
    lines = []
    for i in range(ITEMS):
        if i in MALFORMED:
            lines.append(MALFORMED[i])
            continue
        chosen = "coding" if i % 4 == 0 else "default"
        item = {"prompt": f"item {i} " + ("python?" if i % 4 == 0 else "hello")}
        item["expected_decision"] = (
            chosen if i % 5 else ("default" if chosen == "coding" else "coding")
        )
        if i % 10 == 3:
            item["expected_model"] = "large" if chosen == "coding" else "small"
        lines.append(json.dumps(item))
    return lines


def expected_counts():
    correct = decisions = 0
    for i in range(ITEMS):
        if i in MALFORMED:
            continue
        decisions += 1
        correct += i % 5 != 0
    return {"total": ITEMS, "invalid": len(MALFORMED), "correct": correct, "decisions": decisions}


def write_dataset(workspace):
    directory = workspace / "datasets"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "eval.jsonl").write_text("\n".join(dataset_lines()) + "\n")


def submit(server):
    answer = httpx.post(
        f"{server.url}/api/jobs",
        json={
            "kind": "evaluation",
            "params": {
                "dataset_path": "eval.jsonl",
                "send_to_model": True,
                "checkpoint_every": EVERY,
            },
        },
        timeout=30,
    )
    assert answer.status_code == 201, answer.text
    return answer.json()["id"]


def job(server, job_id):
    answer = httpx.get(f"{server.url}/api/jobs/{job_id}", timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def wait_for(server, job_id, condition, timeout=120):
    deadline = time.monotonic() + timeout
    while True:
        current = job(server, job_id)
        if condition(current):
            return current
        assert time.monotonic() < deadline, current
        time.sleep(0.05)


def check_finished(server, job_id, upstream, killed_at_requests):
    """The job ends succeeded on attempt 2 with one result per item and the right counts;
    only the chunk in flight at the kill went to the model twice."""
    done = wait_for(server, job_id, lambda j: j["status"] in ("succeeded", "failed", "crashed"))
    assert done["status"] == "succeeded", done
    assert done["attempt"] == 2
    assert done["progress"]["done"] == ITEMS
    results = server.list_all(f"/api/jobs/{job_id}/results")
    assert [r["item_index"] for r in results] == list(range(ITEMS))
    counts = expected_counts()
    metrics = done["result"]
    assert {k: metrics[k] for k in ("total", "invalid", "correct")} == {
        k: counts[k] for k in ("total", "invalid", "correct")
    }
    assert metrics["decisions"]["items"] == counts["decisions"]
    assert sum(r["correct"] for r in results) == counts["correct"]
    assert {r["item_index"] for r in results if not r["valid"]} == set(MALFORMED)
    assert {r["attempt"] for r in results} == {1, 2}
    # Every valid item reached the model; after the resume at most one checkpoint's worth
    # (and the one in flight) went again.
    sent = Counter(r.body["messages"][-1]["content"] for r in upstream.requests)
    assert len(sent) == ITEMS - len(MALFORMED)
    again = sum(n - 1 for n in sent.values())
    assert again <= EVERY + 1, again
    assert len(upstream.requests) == ITEMS - len(MALFORMED) + again
    # The resume started at the checkpoint, before which every item was sent once.
    first_attempt = [r for r in results if r["attempt"] == 1]
    assert first_attempt and len(first_attempt) % EVERY == 0
    assert killed_at_requests <= len(upstream.requests)


@pytest.mark.restart(surface="evaluation_results")
def test_sigkill_mid_evaluation_resumes_from_the_checkpoint(server_factory):
    with FakeUpstream(models=["m"], latency_ms=2) as upstream:
        first = server_factory(**routing(upstream))
        write_dataset(first.workspace)
        first.start()
        job_id = submit(first)
        wait_for(first, job_id, lambda j: j["progress"]["done"] >= 400)
        first.kill()
        killed_at = len(upstream.requests)
        assert killed_at < ITEMS

        second = server_factory(**routing(upstream)).start()
        check_finished(second, job_id, upstream, killed_at)


@pytest.mark.postgres
def test_a_killed_worker_s_evaluation_is_resumed_by_another_while_serve_keeps_running(
    postgres_dsn, tmp_path
):
    state = shared_postgres_state(postgres_dsn)
    workspace = tmp_path / "ws"
    write_dataset(workspace)
    with FakeUpstream(models=["m"], latency_ms=2) as upstream:
        sections = routing(upstream)
        serve_config = tmp_path / "serve.yaml"
        serve_sections = {**sections, "jobs": {**sections["jobs"], "concurrency": 0}}
        serve_config.write_text(yaml.safe_dump({"state": state, **serve_sections}))
        worker_config = tmp_path / "worker.yaml"
        worker_config.write_text(yaml.safe_dump({"state": state, **sections}))
        with ServerProcess(workspace=workspace, config=serve_config) as server:
            with WorkerProcess(workspace=workspace, config=worker_config) as worker:
                job_id = submit(server)
                mid = wait_for(server, job_id, lambda j: j["progress"]["done"] >= 400)
                assert mid["lease_owner"] == worker.replica_id
                worker.kill()
            killed_at = len(upstream.requests)
            assert killed_at < ITEMS
            with WorkerProcess(workspace=workspace, config=worker_config) as second:
                check_finished(server, job_id, upstream, killed_at)
                events = server.list_all(f"/api/jobs/{job_id}/events")
                owners = [e["data"]["owner"] for e in events if e["type"] == "job.started"]
                assert owners == [worker.replica_id, second.replica_id]
            assert server.exit_code() is None  # serve ran throughout
