"""Kill-and-restart tests of router_replay, on SQLite and PostgreSQL, through the real server."""

import asyncio
import os
import signal
import threading
import time

import httpx
import pytest

from routekeeper.testing import FakeUpstream

pytestmark = pytest.mark.slow

FAST_SWEEP = {"heartbeat_seconds": 0.5, "stale_after_seconds": 3.0}

ECHO = {
    "models": [
        {"name": "small", "backend": {"type": "echo"}},
        {"name": "large", "backend": {"type": "echo"}},
    ],
    "signals": {"keywords": [{"name": "code", "any": ["python"]}]},
    "decisions": [
        {"name": "coding", "priority": 10, "when": "keywords:code", "model": "large"},
        {"name": "default", "model": "small"},
    ],
}


async def _burst(url: str, n: int, concurrency: int) -> list[str]:
    ids: list[str] = []
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=30) as client:

        async def one(i: int) -> None:
            async with limit:
                content = "python" if i % 2 else "hello"
                response = await client.post(
                    f"{url}/v1/chat/completions",
                    json={
                        "model": "auto",
                        "messages": [{"role": "user", "content": f"{content} {i}"}],
                    },
                    headers={"x-session-id": f"s{i % 5}"},
                )
                assert response.status_code == 200, response.text
                ids.append(response.headers["x-routekeeper-replay-id"])

        await asyncio.gather(*(one(i) for i in range(n)))
    return ids


@pytest.mark.restart(surface="router_replay")
def test_sigterm_keeps_every_finished_request(server_factory):
    first = server_factory(**ECHO).start()
    ids = asyncio.run(_burst(first.url, 500, 8))
    assert first.terminate() == 0
    second = server_factory(**ECHO).start()
    records = {r["id"]: r for r in second.list_all("/api/replay")}
    assert set(ids) <= set(records)
    assert sum(r["lifecycle_state"] == "completed" for r in records.values()) == 500
    sample = records[ids[0]]
    assert sample["terminal_reason"] == "response_complete" and sample["total_tokens"] > 0
    assert sample["decision"] in ("coding", "default") and sample["requested_model"] == "auto"
    coding = [r for r in records.values() if r["decision"] == "coding"]
    assert len(coding) == 250 and all(r["signals"]["keywords"][0]["name"] == "code" for r in coding)
    assert len(second.list_all("/api/replay", session_id="s0")) == 100


@pytest.mark.restart(surface="router_replay")
def test_sigkill_after_the_last_response_loses_nothing_finished(server_factory):
    first = server_factory(**ECHO).start()
    ids = asyncio.run(_burst(first.url, 200, 8))
    first.wait_flushed()  # an answer sent on an ack timeout is committed too by now
    first.kill()
    second = server_factory(**ECHO).start()
    states = {r["id"]: r["lifecycle_state"] for r in second.list_all("/api/replay")}
    assert [states.get(replay_id) for replay_id in ids] == ["completed"] * len(ids)


@pytest.mark.restart(surface="router_replay")
def test_a_request_in_flight_at_sigkill_is_aborted_after_restart(server_factory):
    with FakeUpstream(models=["m"], hang=True) as upstream:
        config = {
            "models": [
                {
                    "name": "hung",
                    "backend": {"type": "openai", "base_url": upstream.base_url, "model": "m"},
                }
            ],
            "decisions": [{"name": "default", "model": "hung"}],
            "runtime": FAST_SWEEP,
        }
        first = server_factory(**config).start()

        def call() -> None:
            try:
                httpx.post(
                    f"{first.url}/v1/chat/completions",
                    json={
                        "model": "auto",
                        "stream": True,
                        "messages": [{"role": "user", "content": "x"}],
                    },
                    timeout=30,
                )
            except httpx.HTTPError:
                pass  # the server dies under it

        client = threading.Thread(target=call)
        client.start()
        assert upstream.wait_for_requests(1, timeout=10)
        first.wait_flushed()  # the in_progress record is stored
        first.kill()
        client.join(30)
        second = server_factory(**config).start()
        # SQLite: aborted before ready (the flock is proof). PostgreSQL: once the next
        # replica's sweep records the crash, within stale + heartbeat of its start.
        deadline = time.monotonic() + FAST_SWEEP["stale_after_seconds"] + 2
        while (records := second.list_all("/api/replay")) and records[0][
            "lifecycle_state"
        ] == "in_progress":
            assert time.monotonic() < deadline, second.log_tail()
            time.sleep(0.2)
        assert len(records) == 1
        record = records[0]
        assert record["stream"] is True and record["selected_model"] == "hung"
        assert record["lifecycle_state"] == "aborted"
        assert record["terminal_reason"] == "process_restart"


@pytest.mark.restart(surface="router_replay")
def test_workers_sigkill_of_one_worker_and_of_the_whole_tree_lose_nothing(server_factory):
    """serve --workers 2: SIGKILL one worker, the port keeps answering; then SIGKILL the
    supervisor and every worker at once and start again: every acknowledged record is
    there."""
    first = server_factory(workers=2, runtime=FAST_SWEEP, **ECHO).start()
    ids = asyncio.run(_burst(first.url, 100, 8))
    victim = httpx.get(f"{first.url}/readyz", timeout=10).json()["replica_id"]
    rows = httpx.get(f"{first.url}/api/replicas", params={"phase": "ready"}, timeout=10)
    pid = next(r["pid"] for r in rows.json()["data"] if r["id"] == victim)
    os.kill(pid, signal.SIGKILL)
    ids += asyncio.run(_burst(first.url, 100, 8))  # answered by the survivor (or a new worker)
    first.kill()  # the supervisor and every worker
    second = server_factory(workers=2, **ECHO).start()
    records = {r["id"]: r for r in second.list_all("/api/replay")}
    assert set(ids) <= set(records)
    assert all(records[i]["lifecycle_state"] == "completed" for i in ids)
