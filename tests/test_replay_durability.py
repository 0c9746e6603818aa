"""Replay durability against the real server on SQLite and PostgreSQL: a prompt holding
U+0000 stored with its batch, no /v1 answer before the replica is ready, and acknowledged
records that survive SIGKILL after SIGKILL under load."""

import asyncio
import json
import random
import threading
import time
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from routekeeper.testing import ServerProcess, TcpProxy, shared_postgres_state

pytestmark = pytest.mark.slow

CAPTURE = {
    "models": [{"name": "small", "backend": {"type": "echo"}}],
    "decisions": [
        {
            "name": "default",
            "model": "small",
            "plugins": {
                "replay": {
                    "capture_request_body": True,
                    "capture_response_body": True,
                    "max_body_bytes": 4096,
                }
            },
        }
    ],
}
PROMPTS = [f"clean prompt {i}" for i in range(10)] + ["before\x00after \x10 nul"]


def _stored_view(server: ServerProcess, replay_id: str) -> dict:
    response = httpx.get(f"{server.url}/api/replay/{replay_id}", timeout=10)
    assert response.status_code == 200, response.text
    record = response.json()
    view = {key: record[key] for key in ("lifecycle_state", "request_body", "prompt_text")}
    answer = json.loads(record["response_body"])
    view["response"] = {k: v for k, v in answer.items() if k not in ("id", "created")}
    return view


def _one_flush_of_eleven(server: ServerProcess) -> list[str]:
    """Eleven requests, one of them with U+0000, all written by the final flush at SIGTERM
    (the flush interval is longer than the test), so they share one transaction."""

    async def send() -> list[str]:
        async with httpx.AsyncClient(timeout=30) as client:
            responses = await asyncio.gather(
                *(
                    client.post(
                        f"{server.url}/v1/chat/completions",
                        json={"model": "auto", "messages": [{"role": "user", "content": p}]},
                    )
                    for p in PROMPTS
                )
            )
        assert all(r.status_code == 200 for r in responses)
        return [r.headers["x-routekeeper-replay-id"] for r in responses]

    ids = asyncio.run(send())
    assert server.terminate() == 0
    return ids


@pytest.mark.postgres
def test_a_nul_byte_does_not_erase_its_batch_on_postgres(tmp_path, postgres_dsn):
    views = {}
    for name, state in (
        ("sqlite", {"backends": {"main": {"type": "sqlite", "path": "state.db"}}}),
        (
            "postgres",
            shared_postgres_state(postgres_dsn),
        ),
    ):
        config = {
            **CAPTURE,
            "state": state,
            "replay": {"durability": "batch", "flush_interval_ms": 60_000},
        }
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        server = ServerProcess(workspace=tmp_path / f"ws-{name}", config=path)
        with server:
            ids = _one_flush_of_eleven(server)
            server.start()
            status = server.component_status("router_replay")
            assert status["dropped"]["value_refused"] == 0
            views[name] = [_stored_view(server, i) for i in ids]
    assert views["postgres"] == views["sqlite"]
    nul = views["postgres"][-1]
    assert nul["prompt_text"] == PROMPTS[-1]
    assert json.loads(nul["request_body"])["messages"][0]["content"] == PROMPTS[-1]
    assert PROMPTS[-1] in nul["response"]["choices"][0]["message"]["content"]
    assert {v["lifecycle_state"] for v in views["postgres"]} == {"completed"}


@pytest.mark.postgres
def test_v1_refuses_until_the_replica_is_ready(tmp_path, postgres_dsn):
    """PostgreSQL hangs while the replica starts: /v1 answers 503 with retry-after (its
    records could not be stored), and routes once the replica is ready."""
    target = urlsplit(postgres_dsn)
    with TcpProxy(target.hostname, target.port or 5432) as proxy:
        config = {
            "models": [{"name": "small", "backend": {"type": "echo"}}],
            "decisions": [{"name": "default", "model": "small"}],
            "state": shared_postgres_state(proxy.dsn_for(postgres_dsn), connect_timeout_seconds=30),
        }
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump(config))
        proxy.freeze()
        server = ServerProcess(workspace=tmp_path / "ws", config=path).start(wait_ready=False)
        with server:
            body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
            refused = 0
            deadline = time.monotonic() + 30
            while refused < 20:
                assert time.monotonic() < deadline, server.log_tail()
                try:
                    response = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=5)
                except httpx.TransportError:
                    time.sleep(0.05)  # not listening yet
                    continue
                assert response.status_code == 503, response.text
                assert response.headers["retry-after"] == "1"
                error = response.json()["error"]
                assert error["code"] == "not_ready" and "phase" in error["message"]
                assert "x-routekeeper-replay-id" not in response.headers
                refused += 1
                time.sleep(0.05)
            models = httpx.get(f"{server.url}/v1/models", timeout=5)
            assert models.status_code == 200  # nothing durable: answered meanwhile
            proxy.restore()
            server.wait_ready(timeout=60)
            response = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=10)
            assert response.status_code == 200
            replay_id = response.headers["x-routekeeper-replay-id"]
            assert httpx.get(f"{server.url}/api/replay/{replay_id}").status_code == 200
            assert server.terminate() == 0


# -- SIGKILL after SIGKILL ------------------------------------------------------------------

ECHO = {
    "models": [{"name": "small", "backend": {"type": "echo"}}],
    "decisions": [{"name": "default", "model": "small"}],
    "server": {"log_level": "warning"},
}
# Each kill cuts about CONCURRENCY requests at a random moment (hundreds of answers checked in
# all); ten kills also leave the last replica ten dead ones to recover.
KILLS = 10
FAST_SWEEP = {"heartbeat_seconds": 0.5, "stale_after_seconds": 3.0}
CONCURRENCY = 8


async def _load(url: str, stop: threading.Event, seen: list[tuple[str, str, bool]]) -> None:
    """Requests at CONCURRENCY until the server dies; every answer received complete (the
    whole JSON body, or a stream through ``data: [DONE]``) is noted with its replay id and
    its durable header."""

    async def worker(i: int) -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            n = 0
            while not stop.is_set():
                n += 1
                stream = (i + n) % 2 == 0
                body = {
                    "model": "auto",
                    "stream": stream,
                    "messages": [{"role": "user", "content": f"worker {i} request {n}"}],
                }
                try:
                    if not stream:
                        response = await client.post(f"{url}/v1/chat/completions", json=body)
                        if response.status_code == 200:
                            response.json()
                            seen.append(_noted(response, stream))
                        continue
                    async with client.stream(
                        "POST", f"{url}/v1/chat/completions", json=body
                    ) as response:
                        lines = [line async for line in response.aiter_lines() if line]
                    if response.status_code == 200 and lines and lines[-1] == "data: [DONE]":
                        seen.append(_noted(response, stream))
                except (httpx.HTTPError, ValueError):
                    return  # the server was killed under this request

    await asyncio.gather(*(worker(i) for i in range(CONCURRENCY)))


def _noted(response: httpx.Response, stream: bool) -> tuple[str, str, bool]:
    return (
        response.headers["x-routekeeper-replay-id"],
        response.headers.get("x-routekeeper-replay-durable", "unknown"),
        stream,
    )


@pytest.mark.restart(surface="router_replay")
def test_acknowledged_records_survive_repeated_sigkill_under_load(server_factory):
    """Ten SIGKILLs (KILLS), each at a random moment while 8 clients send (half of them streams):
    every answer the client received complete is stored and completed; what the kill
    interrupted is aborted/process_restart or absent (or completed, when the kill fell
    between the commit and the last byte); nothing stays in_progress."""
    rng = random.Random(8)
    seen: list[tuple[str, str, bool]] = []
    began = time.monotonic()
    for _ in range(KILLS):
        server = server_factory(**ECHO, runtime=FAST_SWEEP).start()
        stop = threading.Event()
        load = threading.Thread(target=asyncio.run, args=(_load(server.url, stop, seen),))
        load.start()
        time.sleep(rng.uniform(0.3, 1.0))
        server.kill()
        stop.set()
        load.join(30)
    last = server_factory(**ECHO, runtime=FAST_SWEEP).start()
    # SQLite: the dead replicas' records are aborted before ready (a free flock is proof).
    # PostgreSQL: once the last replica's sweep records the crashes, within stale +
    # heartbeat of its start.
    deadline = time.monotonic() + FAST_SWEEP["stale_after_seconds"] + 2
    while True:
        records = {r["id"]: r for r in last.list_all("/api/replay")}
        if all(r["lifecycle_state"] != "in_progress" for r in records.values()):
            break
        assert time.monotonic() < deadline, last.log_tail()
        time.sleep(0.2)
    elapsed = time.monotonic() - began
    received = {replay_id for replay_id, _, _ in seen}
    # An answer claims durability unless it says otherwise.
    durable = {replay_id for replay_id, flag, _ in seen if flag != "false"}
    lost = sorted(durable - set(records))
    not_completed = [
        (i, records[i]["lifecycle_state"])
        for i in durable & set(records)
        if records[i]["lifecycle_state"] != "completed"
    ]
    assert not lost and not not_completed, (lost[:5], not_completed[:5])
    others = [r for i, r in records.items() if i not in received]
    assert not [r for r in records.values() if r["lifecycle_state"] == "in_progress"]
    interrupted = [r for r in others if r["lifecycle_state"] != "completed"]
    assert all(
        (r["lifecycle_state"], r["terminal_reason"]) == ("aborted", "process_restart")
        for r in interrupted
    ), {(r["lifecycle_state"], r["terminal_reason"]) for r in interrupted}
    print(
        f"{KILLS} SIGKILLs in {elapsed:.1f}s: {len(seen)} answers received complete "
        f"({sum(s for _, _, s in seen)} streams), {len(durable)} acknowledged durable, all "
        f"stored and completed; not acknowledged: {len(received - durable)}; other records: "
        f"{len(interrupted)} aborted/process_restart, {len(others) - len(interrupted)} "
        "completed whose answer the kill cut"
    )
    assert len(durable) >= 0.95 * len(received)  # the ack timeout is the exception
    assert last.terminate() == 0


def test_implausible_usage_and_long_session_ids_never_cost_a_record(server_factory):
    """An upstream reporting token counts beyond a 4-byte integer (and negative, and not
    integers) used to fail the whole flush on PostgreSQL and lose the batch uncounted on
    SQLite; an x-session-id over 256 characters did the same on PostgreSQL. The counts are
    stored as unknown, the long session id is a 400, and the neighbours are stored."""
    from routekeeper.testing import FakeUpstream

    usage = {"prompt_tokens": 2**64, "completion_tokens": -3, "total_tokens": 1.5}
    with FakeUpstream(models=["m"], usage=usage) as upstream:
        config = {
            "models": [
                {
                    "name": "m",
                    "backend": {"type": "openai", "base_url": upstream.base_url, "model": "m"},
                }
            ],
            "decisions": [{"name": "default", "model": "m"}],
            "replay": {"durability": "batch", "flush_interval_ms": 60_000},
        }
        server = server_factory(**config).start()
        body = {"model": "auto", "messages": [{"role": "user", "content": "count me"}]}
        too_long = httpx.post(
            f"{server.url}/v1/chat/completions", json=body, headers={"x-session-id": "s" * 257}
        )
        assert too_long.status_code == 400
        error = too_long.json()["error"]
        assert error["param"] == "x-session-id" and "256" in error["message"]
        ids = []
        for session in ("s" * 256, "ok"):  # the longest session id that fits, and a short one
            response = httpx.post(
                f"{server.url}/v1/chat/completions", json=body, headers={"x-session-id": session}
            )
            assert response.status_code == 200
            ids.append(response.headers["x-routekeeper-replay-id"])
        assert server.terminate() == 0  # one final flush holds both records
        server.start()
        for replay_id in ids:
            record = httpx.get(f"{server.url}/api/replay/{replay_id}").json()
            assert record["lifecycle_state"] == "completed"
            assert (record["prompt_tokens"], record["completion_tokens"]) == (None, None)
            assert record["total_tokens"] is None
        status = server.component_status("router_replay")
        assert sum(status["dropped"].values()) == 0
