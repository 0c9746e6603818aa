"""The database unreachable for 10 s under load (through a TCP proxy the test cuts and
restores; the shared PostgreSQL server is never stopped): chat keeps routing, replay drops
are counted, durable endpoints answer 503, readiness says degraded, and records resume
without a restart."""

import threading
import time
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
import yaml

from routekeeper.testing import ServerProcess, TcpProxy

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def _via(dsn: str, proxy: TcpProxy) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(netloc=f"{proxy.host}:{proxy.port}"))


def test_chat_survives_ten_seconds_without_its_database(tmp_path, postgres_dsn):
    target = urlsplit(postgres_dsn)
    with TcpProxy(target.hostname, target.port or 5432) as proxy:
        config = {
            "models": [{"name": "small", "backend": {"type": "echo"}}],
            "decisions": [{"name": "default", "model": "small"}],
            "state": {
                "mode": "shared",
                "default_backend": "pg",
                "backends": {
                    "pg": {
                        "type": "postgres",
                        "dsn": _via(postgres_dsn, proxy),
                        "connect_timeout_seconds": 1,
                    }
                },
            },
            "runtime": {"heartbeat_seconds": 0.5, "stale_after_seconds": 5},
            "replay": {"flush_interval_ms": 50},
        }
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump(config))
        with ServerProcess(workspace=tmp_path / "ws", config=path) as server:
            statuses: list[int] = []
            stop = threading.Event()

            def load() -> None:
                with httpx.Client(timeout=10) as client:
                    while not stop.is_set():
                        response = client.post(
                            f"{server.url}/v1/chat/completions",
                            json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]},
                        )
                        statuses.append(response.status_code)
                        time.sleep(0.02)

            workers = [threading.Thread(target=load) for _ in range(4)]
            for w in workers:
                w.start()
            time.sleep(1.0)
            proxy.cut()
            cut_at = time.monotonic()
            degraded = unavailable = False
            while time.monotonic() - cut_at < 10:
                ready = httpx.get(f"{server.url}/readyz", timeout=5).json()
                degraded = degraded or ready["storage"] == "degraded"
                listing = httpx.get(f"{server.url}/api/replay", timeout=10)
                if listing.status_code == 503:
                    unavailable = listing.json()["error"]["code"] == "storage_unavailable"
                time.sleep(0.5)
            proxy.restore()
            time.sleep(3.0)
            stop.set()
            for w in workers:
                w.join(30)
            assert statuses and set(statuses) == {200}, f"chat failed: {set(statuses)}"
            assert degraded and unavailable
            status = httpx.get(f"{server.url}/api/status", timeout=10).json()
            assert status["replay"]["dropped"]["db_unavailable"] > 0
            assert readiness_recovers(server)
            # a request after the outage is recorded again
            fresh = httpx.post(
                f"{server.url}/v1/chat/completions",
                json={"model": "auto", "messages": [{"role": "user", "content": "after"}]},
            ).headers["x-routekeeper-replay-id"]
            deadline = time.monotonic() + 10
            while httpx.get(f"{server.url}/api/replay/{fresh}").status_code != 200:
                assert time.monotonic() < deadline, server.log_tail()
                time.sleep(0.1)
            print(f"{len(statuses)} chat requests, all 200; replay {status['replay']}")
            assert server.terminate() == 0


def readiness_recovers(server: ServerProcess, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if httpx.get(f"{server.url}/readyz", timeout=5).json()["storage"] == "ok":
            return True
        time.sleep(0.2)
    return False
