"""Rate limits through real server processes, the key made with ``routekeeper keys create
--rpm 60`` and the official ``openai`` SDK as the client: 100 requests alternating between
two processes that serve the key give exactly 60 answers and 40 429s with ``retry-after``,
for the two workers of one ``serve --workers 2`` (the workspace's limits file) and for two
PostgreSQL replicas sharing Redis. Redis down: requests pass, counted in /metrics, logged
once."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from routekeeper.testing import ServerProcess
from routekeeper.testing.backends import shared_postgres_state
from routekeeper.testing.tcpproxy import TcpProxy
from routekeeper.testing.tenancy import create_key

pytestmark = pytest.mark.slow

ECHO = {
    "models": [{"name": "small", "backend": {"type": "echo"}}],
    "decisions": [{"name": "default", "model": "small"}],
    "auth": {"mode": "api_key"},
}
WINDOW_SECONDS = 60


def write_config(path: Path, **sections: Any) -> Path:
    path.write_text(yaml.safe_dump({**ECHO, **sections}))
    return path


def one_connection() -> httpx.Client:
    """A client that keeps one connection: every request on it reaches one process."""
    return httpx.Client(
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1), timeout=30
    )


def replica_of(client: httpx.Client, url: str, admin: str) -> str:
    response = client.get(f"{url}/api/status", headers={"authorization": f"Bearer {admin}"})
    assert response.status_code == 200, response.text
    return str(response.json()["replica_id"])


def alternate(
    clients: list[tuple[httpx.Client, str]], secret: str, n: int = 100
) -> tuple[list[httpx.Headers], list[httpx.Headers]]:
    """``n`` chat completions, one at a time, alternating over ``clients`` (client, base
    url): the headers of the accepted ones and of the 429s."""
    sdks = [
        openai.OpenAI(base_url=f"{url}/v1", api_key=secret, max_retries=0, http_client=client)
        for client, url in clients
    ]
    accepted: list[httpx.Headers] = []
    limited: list[httpx.Headers] = []
    began = time.monotonic()
    for i in range(n):
        try:
            raw = sdks[i % len(sdks)].chat.completions.with_raw_response.create(
                model="auto", messages=[{"role": "user", "content": f"hi {i}"}]
            )
            raw.parse()
            accepted.append(raw.headers)
        except openai.RateLimitError as exc:
            assert exc.code == "rate_limit_exceeded", exc.body
            limited.append(exc.response.headers)
    took = time.monotonic() - began
    print(f"{n} requests in {took:.2f}s")
    # The counts below hold while every request is in one window.
    assert took < WINDOW_SECONDS, f"the requests took {took:.1f}s, more than one window"
    return accepted, limited


def check_60_of_100(accepted: list[httpx.Headers], limited: list[httpx.Headers]) -> None:
    assert (len(accepted), len(limited)) == (60, 40)
    remaining = [int(h["x-ratelimit-remaining-requests"]) for h in accepted]
    assert remaining == list(range(59, -1, -1))
    for headers in accepted:
        assert headers["x-ratelimit-limit-requests"] == "60"
        assert re.fullmatch(r"[\d.]+s", headers["x-ratelimit-reset-requests"])
    for headers in limited:
        assert int(headers["retry-after"]) >= 1
        assert headers["x-ratelimit-limit-requests"] == "60"
        assert headers["x-ratelimit-remaining-requests"] == "0"


def limiter_counts(url: str) -> dict[tuple[str, str], float]:
    """``routekeeper_rate_limit_checks_total`` per (replica, outcome), from /metrics (the
    replica label only with workers: ``""`` without)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    found = re.findall(
        r'routekeeper_rate_limit_checks_total\{limiter="\w+",outcome="(\w+)"'
        r'(?:,replica="(rep_\w+)")?\} ([\d.]+)',
        text,
    )
    return {(replica, outcome): float(value) for outcome, replica, value in found}


def test_two_workers_of_one_serve_share_the_limit(tmp_path: Path):
    workspace = tmp_path / "ws"
    config = write_config(tmp_path / "config.yaml")
    _, member = create_key(workspace, config, "alpha", rpm=60)
    _, admin = create_key(workspace, config, "ops", role="admin")
    server = ServerProcess(workspace=workspace, config=config, workers=2, api_key=admin)
    with server:
        # One connection on each worker (a new connection lands on either).
        pinned: dict[str, httpx.Client] = {}
        for _ in range(200):
            client = one_connection()
            replica = replica_of(client, server.url, admin)
            if replica in pinned:
                client.close()
            else:
                pinned[replica] = client
            if len(pinned) == 2:
                break
        assert len(pinned) == 2, "every new connection reached the same worker"
        try:
            clients = [(client, server.url) for client in pinned.values()]
            accepted, limited = alternate(clients, member)
            check_60_of_100(accepted, limited)
            # both workers served requests of the key: each counted its own (its /metrics
            # series; another worker's are as of its last publication on the worker board)
            for replica, client in pinned.items():
                assert replica_of(client, server.url, admin) == replica  # still pinned
        finally:
            for client in pinned.values():
                client.close()
        deadline = time.monotonic() + 15
        while True:
            counts = limiter_counts(server.url)
            allowed = {r: counts.get((r, "allowed"), 0) for r in pinned}
            refused = {r: counts.get((r, "refused"), 0) for r in pinned}
            if sum(allowed.values()) == 60 and sum(refused.values()) == 40:
                break
            assert time.monotonic() < deadline, counts
            time.sleep(0.1)
        assert all(allowed[r] + refused[r] == 50 for r in pinned), counts
        assert (workspace / "rate_limits.db").exists()


@pytest.mark.postgres
@pytest.mark.redis
def test_two_postgres_replicas_sharing_redis_share_the_limit(
    tmp_path: Path, postgres_dsn: str, redis_url: str
):
    state = shared_postgres_state(postgres_dsn)
    configs = [
        write_config(tmp_path / f"config-{i}.yaml", state=state, redis={"url": redis_url})
        for i in range(2)
    ]
    _, member = create_key(tmp_path / "ws-0", configs[0], "alpha", rpm=60)
    servers = [
        ServerProcess(workspace=tmp_path / f"ws-{i}", config=config)
        for i, config in enumerate(configs)
    ]
    try:
        for server in servers:
            server.start()
        clients = [(one_connection(), server.url) for server in servers]
        try:
            accepted, limited = alternate(clients, member)
        finally:
            for client, _ in clients:
                client.close()
        check_60_of_100(accepted, limited)
        for server in servers:  # each replica counted its half
            counts = limiter_counts(server.url)
            assert sorted(v for (_, outcome), v in counts.items() if outcome != "unchecked") == [
                20,
                30,
            ], counts
    finally:
        for server in servers:
            server.stop_quietly()


@pytest.mark.redis
def test_redis_down_requests_pass_counted_in_metrics_and_logged_once(
    tmp_path: Path, redis_url: str
):
    host, _, port = redis_url.split("//", 1)[1].split("/", 1)[0].rpartition(":")
    with TcpProxy(host, int(port)) as proxy:
        workspace = tmp_path / "ws"
        config = write_config(tmp_path / "config.yaml", redis={"url": proxy.dsn_for(redis_url)})
        _, member = create_key(workspace, config, "alpha", rpm=3)
        with ServerProcess(workspace=workspace, config=config) as server:
            sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key=member, max_retries=0)

            def chat() -> httpx.Headers:
                raw = sdk.chat.completions.with_raw_response.create(
                    model="auto", messages=[{"role": "user", "content": "hi"}]
                )
                raw.parse()
                return raw.headers

            assert [chat()["x-ratelimit-remaining-requests"] for _ in range(3)] == ["2", "1", "0"]
            with pytest.raises(openai.RateLimitError):
                chat()

            proxy.cut()
            for _ in range(10):  # past the limit, and every one passes (no headers: unknown)
                assert "x-ratelimit-remaining-requests" not in chat()
            assert limiter_counts(server.url) == {
                ("", "allowed"): 3,
                ("", "refused"): 1,
                ("", "unchecked"): 10,
            }
            assert server.log().count("rate limits are not enforced") == 1, server.log_tail()
            sdk.close()
