"""A revocation reaches every replica: two PostgreSQL replicas in ``api_key`` mode; a key
revoked on replica A (through ``/api/keys/{id}/revoke``, or ``routekeeper keys revoke`` on
the state directly) is refused (401) on replica B within 5 s. Without Redis the key cache's
``auth.cache_seconds`` bounds the delay; with ``redis.url`` the revocation is announced and B
drops the key at once (the measured delays are printed); with Redis cut away, revocations
still arrive within the cache bound, and once Redis is back the listener has reconnected."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from routekeeper.testing import ServerProcess, TcpProxy, shared_postgres_state
from routekeeper.testing.tenancy import keys_cli

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

BOUND_SECONDS = 5.0
CHAT = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}


class Cluster:
    """Two replicas on one PostgreSQL database in ``api_key`` mode, and an admin key made
    with the CLI before either starts."""

    def __init__(self, tmp_path: Path, dsn: str, redis_url: str | None) -> None:
        self.config = tmp_path / "config.yaml"
        self.workspace = tmp_path / "ws"
        config: dict[str, Any] = {
            "models": [{"name": "small", "backend": {"type": "echo"}}],
            "decisions": [{"name": "default", "model": "small"}],
            "state": shared_postgres_state(dsn),
            "auth": {"mode": "api_key"},
        }
        if redis_url is not None:
            config["redis"] = {"url": redis_url}
        self.config.write_text(yaml.safe_dump(config))
        lines = keys_cli(self.workspace, self.config, "create", "--tenant", "ops", "--role=admin")
        self.admin = {"authorization": f"Bearer {lines[-1]}"}
        self.replicas = [
            ServerProcess(workspace=tmp_path / f"ws{n}", config=self.config) for n in (0, 1)
        ]
        for replica in self.replicas:
            replica.start()

    def member_key(self) -> tuple[str, dict[str, str]]:
        created = httpx.post(
            f"{self.replicas[0].url}/api/keys",
            json={"tenant": "alpha", "label": "propagation"},
            headers=self.admin,
            timeout=10,
        )
        assert created.status_code == 201, created.text
        body = created.json()
        return body["id"], {"authorization": f"Bearer {body['secret']}"}

    def component(self, n: int) -> dict[str, Any]:
        status = httpx.get(f"{self.replicas[n].url}/api/status", headers=self.admin, timeout=10)
        assert status.status_code == 200, status.text
        row = next(r for r in status.json()["surfaces"] if r["name"] == "api_keys")
        component: dict[str, Any] = row["component"]
        return component

    def stop(self) -> None:
        for replica in self.replicas:
            replica.stop_quietly()


@pytest.fixture
def cluster_factory(tmp_path: Path, postgres_dsn: str) -> Iterator[Any]:
    made: list[Cluster] = []

    def make(redis_url: str | None, dsn: str = postgres_dsn) -> Cluster:
        made.append(Cluster(tmp_path, dsn, redis_url))
        return made[-1]

    try:
        yield make
    finally:
        for cluster in made:
            cluster.stop()


def chat(server: ServerProcess, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/chat/completions", json=CHAT, headers=headers, timeout=10)


def models(server: ServerProcess, headers: dict[str, str]) -> httpx.Response:
    """The cheapest member route: polling it measures the key check, not a chat's latency."""
    return httpx.get(f"{server.url}/v1/models", headers=headers, timeout=10)


def refused_after(server: ServerProcess, headers: dict[str, str], began: float) -> float:
    """Seconds from ``began`` until ``server`` answers the key with 401 invalid_api_key
    (fails past the bound)."""
    while True:
        answer = models(server, headers)
        if answer.status_code == 401:
            assert answer.json()["error"]["code"] == "invalid_api_key", answer.text
            return time.monotonic() - began
        assert answer.status_code == 200, answer.text
        assert time.monotonic() - began < BOUND_SECONDS, (
            f"the revoked key still works after {BOUND_SECONDS} s\n{server.log_tail()}"
        )
        time.sleep(0.01)


def revoke_on_a_and_measure_b(cluster: Cluster) -> float:
    a, b = cluster.replicas
    key_id, key = cluster.member_key()
    # Both replicas have checked (and cached) the key.
    assert chat(a, key).status_code == 200
    assert chat(b, key).status_code == 200
    began = time.monotonic()
    revoked = httpx.post(f"{a.url}/api/keys/{key_id}/revoke", headers=cluster.admin, timeout=10)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revoked_at"] is not None
    delay = refused_after(b, key, began)
    assert chat(a, key).status_code == 401  # the replica that revoked refuses it at once
    return delay


def revoke_with_cli_and_measure(cluster: Cluster) -> list[float]:
    key_id, key = cluster.member_key()
    for replica in cluster.replicas:
        assert chat(replica, key).status_code == 200
    began = time.monotonic()
    keys_cli(cluster.workspace, cluster.config, "revoke", key_id)
    revoked_at = time.monotonic()  # the command's own start-up is not the replicas' delay
    return [refused_after(r, key, began) - (revoked_at - began) for r in cluster.replicas]


def test_without_redis_a_revocation_reaches_the_other_replica_within_the_cache_time(
    cluster_factory,
):
    cluster = cluster_factory(None)
    delays = [revoke_on_a_and_measure_b(cluster) for _ in range(3)]
    cli = revoke_with_cli_and_measure(cluster)
    print(f"without Redis: API revoke -> refused on B after {delays} s; CLI revoke -> {cli} s")
    assert cluster.component(1)["revocations"] is None
    assert max(delays) < BOUND_SECONDS


@pytest.mark.redis
def test_with_redis_a_revocation_reaches_the_other_replica_at_once(cluster_factory, redis_url):
    cluster = cluster_factory(redis_url)
    delays = [revoke_on_a_and_measure_b(cluster) for _ in range(5)]
    cli = revoke_with_cli_and_measure(cluster)
    print(f"with Redis: API revoke -> refused on B after {delays} s; CLI revoke -> {cli} s")
    assert max(delays) < BOUND_SECONDS
    heard = cluster.component(1)["revocations"]
    assert heard["subscribed"] and heard["received"] >= 6, heard
    assert cluster.component(0)["revocations"]["published"] >= 5


@pytest.mark.redis
def test_redis_going_away_costs_only_the_cache_time_and_the_listener_comes_back(
    cluster_factory, redis_url
):
    target = urlsplit(redis_url)
    with TcpProxy(target.hostname or "127.0.0.1", target.port or 6379) as proxy:
        cluster = cluster_factory(f"redis://{proxy.host}:{proxy.port}/0")
        assert revoke_on_a_and_measure_b(cluster) < BOUND_SECONDS
        proxy.cut()
        deadline = time.monotonic() + 10
        while cluster.component(1)["revocations"]["subscribed"]:
            assert time.monotonic() < deadline, "the listener did not notice Redis went away"
            time.sleep(0.1)
        # Redis away: revoking still answers, and the cache bounds the delay.
        during = revoke_on_a_and_measure_b(cluster)
        assert cluster.component(0)["revocations"]["publish_failures"] >= 1
        proxy.restore()
        deadline = time.monotonic() + 10
        while not all(cluster.component(n)["revocations"]["subscribed"] for n in (0, 1)):
            assert time.monotonic() < deadline, "the listener did not reconnect"
            time.sleep(0.1)
        after = revoke_on_a_and_measure_b(cluster)
        print(f"Redis cut: refused on B after {during:.3f} s; reconnected: {after:.3f} s")
        assert during < BOUND_SECONDS and after < BOUND_SECONDS
        assert cluster.component(1)["revocations"]["reconnects"] >= 1
        for replica in cluster.replicas:
            assert replica.exit_code() is None, replica.log_tail()
            secret = cluster.admin["authorization"].removeprefix("Bearer ")
            assert secret not in replica.log(), "a key's secret reached the log"
