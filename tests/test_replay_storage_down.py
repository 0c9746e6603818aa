"""The database unreachable for 10 s under load (through a TCP proxy the test cuts and
restores; the shared PostgreSQL server is never stopped), in both durability modes: chat keeps
routing, durable endpoints answer 503, readiness says degraded, records resume without a
restart, and no record of a request that completed is left ``in_progress`` or ``aborted``:
its finish was kept in memory until the database came back (records beyond
``replay.queue_max`` are dropped and counted)."""

import threading
import time
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from routekeeper.testing import ServerProcess, TcpProxy, shared_postgres_state

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest.mark.parametrize("durability", ["acknowledged", "batch"])
def test_chat_survives_ten_seconds_without_its_database(tmp_path, postgres_dsn, durability):
    target = urlsplit(postgres_dsn)
    with TcpProxy(target.hostname, target.port or 5432) as proxy:
        config = {
            "models": [{"name": "small", "backend": {"type": "echo"}}],
            "decisions": [{"name": "default", "model": "small"}],
            "state": shared_postgres_state(proxy.dsn_for(postgres_dsn), connect_timeout_seconds=1),
            "runtime": {"heartbeat_seconds": 0.5, "stale_after_seconds": 5},
            "replay": {"flush_interval_ms": 50, "durability": durability},
        }
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump(config))
        with ServerProcess(workspace=tmp_path / "ws", config=path) as server:
            answers: list[tuple[int, str, str]] = []
            stop = threading.Event()

            def load() -> None:
                with httpx.Client(timeout=10) as client:
                    while not stop.is_set():
                        response = client.post(
                            f"{server.url}/v1/chat/completions",
                            json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]},
                        )
                        answers.append(
                            (
                                response.status_code,
                                response.headers.get("x-routekeeper-replay-id", ""),
                                response.headers.get("x-routekeeper-replay-durable", ""),
                            )
                        )
                        time.sleep(0.02)

            workers = [threading.Thread(target=load) for _ in range(4)]
            for w in workers:
                w.start()
            wait_for_answers(answers, 20)  # under load before the cut
            proxy.cut()
            cut_at = time.monotonic()
            during = len(answers)
            degraded = unavailable = False
            while time.monotonic() - cut_at < 10:
                ready = httpx.get(f"{server.url}/readyz", timeout=5).json()
                degraded = degraded or ready["storage"] == "degraded"
                listing = httpx.get(f"{server.url}/api/replay", timeout=10)
                if listing.status_code == 503:
                    unavailable = listing.json()["error"]["code"] == "storage_unavailable"
                time.sleep(0.5)
            served_during = len(answers) - during
            proxy.restore()
            recovered = readiness_recovers(server)
            wait_for_answers(answers, len(answers) + 20)  # and under load after it
            stop.set()
            for w in workers:
                w.join(30)
            statuses = {status for status, _, _ in answers}
            assert answers and statuses == {200}, f"chat failed: {statuses}"
            assert served_during > 50, "chat stalled while the database was away"
            assert degraded and unavailable
            assert recovered, server.log_tail()
            # what was kept during the outage is written once the database is back
            server.wait_flushed(timeout=20)
            status = server.component_status("router_replay")
            records = {r["id"]: r for r in server.list_all("/api/replay")}
            ids = [replay_id for _, replay_id, _ in answers]
            states = {records[i]["lifecycle_state"] for i in ids if i in records}
            assert states == {"completed"}, states  # none in_progress, none aborted
            missing = [i for i in ids if i not in records]
            dropped = sum(status["dropped"].values())
            assert len(missing) == dropped, (len(missing), status, server.log_tail())
            durable = [i for _, i, d in answers if d == "true"]
            assert all(i in records for i in durable)
            if durability == "batch":
                assert durable == []
            print(
                f"{durability}: {len(answers)} chat requests, all 200 ({served_during} during "
                f"the cut); {len(records)} records, all completed; {len(missing)} dropped; "
                f"{len(durable)} acknowledged durable; replay status {status}"
            )
            # a request after the outage is recorded again
            fresh = httpx.post(
                f"{server.url}/v1/chat/completions",
                json={"model": "auto", "messages": [{"role": "user", "content": "after"}]},
            )
            if durability == "acknowledged":
                assert fresh.headers["x-routekeeper-replay-durable"] == "true"
            replay_id = fresh.headers["x-routekeeper-replay-id"]
            deadline = time.monotonic() + 10
            while httpx.get(f"{server.url}/api/replay/{replay_id}").status_code != 200:
                assert time.monotonic() < deadline, server.log_tail()
                time.sleep(0.1)
            assert server.terminate() == 0


def wait_for_answers(answers: list, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while len(answers) < count:
        assert time.monotonic() < deadline, f"{len(answers)} answers, waited for {count}"
        time.sleep(0.05)


def readiness_recovers(server: ServerProcess, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if httpx.get(f"{server.url}/readyz", timeout=5).json()["storage"] == "ok":
            return True
        time.sleep(0.2)
    return False
