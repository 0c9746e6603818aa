"""The database unreachable in ``api_key`` mode (through a TCP proxy the test cuts and
restores; the shared PostgreSQL server is never stopped): a key the replica checked before
the outage keeps working for ``auth.offline_grace_seconds``, then gets 503
``storage_unavailable``; a key it never saw gets 503 (not 401: it may well be valid) from the
start; a malformed key is still 401 (no database needed to know). Once the database is back,
every key works again without a restart."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from routekeeper.testing import ServerProcess, TcpProxy, shared_postgres_state
from routekeeper.testing.tenancy import bearer, create_key

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

GRACE_SECONDS = 6.0
CACHE_SECONDS = 0.5
CHAT = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}


def models(server: ServerProcess, key: dict[str, str]) -> httpx.Response:
    return httpx.get(f"{server.url}/v1/models", headers=key, timeout=10)


def unavailable(answer: httpx.Response) -> bool:
    return answer.status_code == 503 and answer.json()["error"]["code"] == "storage_unavailable"


def test_known_keys_ride_out_the_grace_then_503_and_all_work_once_the_database_is_back(
    tmp_path, postgres_dsn
):
    target = urlsplit(postgres_dsn)
    with TcpProxy(target.hostname or "127.0.0.1", target.port or 5432) as proxy:
        config = tmp_path / "c.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "models": [{"name": "small", "backend": {"type": "echo"}}],
                    "decisions": [{"name": "default", "model": "small"}],
                    "state": shared_postgres_state(
                        proxy.dsn_for(postgres_dsn), connect_timeout_seconds=1
                    ),
                    "runtime": {"heartbeat_seconds": 0.5, "stale_after_seconds": 5},
                    "auth": {
                        "mode": "api_key",
                        "cache_seconds": CACHE_SECONDS,
                        "offline_grace_seconds": GRACE_SECONDS,
                    },
                }
            )
        )
        workspace = tmp_path / "ws"
        known = bearer(create_key(workspace, config, "alpha")[1])
        unseen = bearer(create_key(workspace, config, "beta")[1])
        malformed = {"authorization": "Bearer rk_not-a-key"}
        with ServerProcess(workspace=workspace, config=config) as server:
            assert models(server, known).status_code == 200
            time.sleep(CACHE_SECONDS * 2)  # its entry is stale: the next use reads again
            assert models(server, known).status_code == 200
            proxy.cut()
            cut_at = time.monotonic()

            # Well inside the grace: the known key works (chat too), the unseen one cannot
            # be checked, the malformed one is refused without the database.
            served = 0
            while time.monotonic() - cut_at < GRACE_SECONDS / 2:
                answer = models(server, known)
                assert answer.status_code == 200, answer.text
                served += 1
                time.sleep(0.05)
            chat = httpx.post(
                f"{server.url}/v1/chat/completions", json=CHAT, headers=known, timeout=10
            )
            assert chat.status_code == 200, chat.text
            assert unavailable(models(server, unseen))
            refused = models(server, malformed)
            assert refused.status_code == 401
            assert refused.json()["error"]["code"] == "invalid_api_key"

            # Past the grace: the known key is 503 too.
            while not unavailable(answer := models(server, known)):
                assert answer.status_code == 200, answer.text
                assert time.monotonic() - cut_at < GRACE_SECONDS + 5, server.log_tail()
                time.sleep(0.05)
            ended = time.monotonic() - cut_at
            grace = httpx.get(f"{server.url}/metrics", timeout=10).text
            assert 'routekeeper_auth_checks_total{outcome="offline_grace"}' in grace

            proxy.restore()
            deadline = time.monotonic() + 15
            while models(server, known).status_code != 200:
                assert time.monotonic() < deadline, server.log_tail()
                time.sleep(0.1)
            assert models(server, unseen).status_code == 200
            chat = httpx.post(
                f"{server.url}/v1/chat/completions", json=CHAT, headers=unseen, timeout=10
            )
            assert chat.status_code == 200, chat.text
            assert models(server, malformed).status_code == 401
            print(f"known key served {served}+ times in the outage, 503 after {ended:.2f} s")
            assert server.exit_code() is None
            for key in (known, unseen):
                assert key["authorization"].removeprefix("Bearer ") not in server.log()
