"""The revocation channel on a real Redis: an announced revocation reaches every listener
(another replica's cache drops the key), a subscription marks cached keys for a fresh read
without losing their offline grace, and Redis being unreachable never fails a revocation (the
CLI warns, with the URL's password hidden). ``redis.url`` must be a Redis URL."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import httpx
import pytest
import yaml

from routekeeper.auth.keys import Authenticator
from routekeeper.auth.revocations import (
    RevocationChannel,
    RevocationNotAnnounced,
    publish_revocation,
)
from routekeeper.contract.auth import Access, Role
from routekeeper.contract.errors import ConfigError, Unauthenticated
from routekeeper.sections.auth import AuthSettings
from routekeeper.settings import load_settings
from routekeeper.storage.keys_store import ApiKeysStore
from routekeeper.testing.server import ServerProcess, free_port
from routekeeper.testing.tenancy import keys_cli


async def until(condition, what: str) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{what}: not within 5 s")


@pytest.mark.redis
async def test_a_revocation_announced_by_one_replica_drops_the_key_from_the_others_cache(
    state_storage, redis_url
):
    store = state_storage.store(ApiKeysStore)
    settings = AuthSettings(mode="api_key", cache_seconds=5)
    here = Authenticator(settings, store, redis_url=redis_url)
    there = Authenticator(settings, store, redis_url=redis_url)
    key, secret = await store.create(tenant_id="a", label="", role=Role.MEMBER)
    try:
        for auth in (here, there):
            auth.begin()
            await auth.authenticate(f"Bearer {secret}", Access.MEMBER)
        assert here.channel is not None and there.channel is not None
        # Other tests announce revocations on the same channel meanwhile: wait for this key's.
        heard: list[str] = []
        forget = there.channel.on_revoked
        there.channel.on_revoked = lambda key_id: (heard.append(key_id), forget(key_id))
        await until(lambda: here.channel.subscribed and there.channel.subscribed, "subscribed")
        await store.revoke(key.id)
        await here.revoked(key.id)
        await until(lambda: key.id in heard, "the message")
        # Both read the key again (within cache_seconds the cache alone would let it pass).
        for auth in (here, there):
            with pytest.raises(Unauthenticated, match="revoked"):
                await auth.authenticate(f"Bearer {secret}", Access.MEMBER)
        assert here.channel.counts["published"] == 1
        assert there.status()["revocations"]["subscribed"] is True
    finally:
        await here.stop()
        await there.stop()


@pytest.mark.redis
async def test_a_listener_that_subscribes_again_rereads_keys_it_knows(redis_url):
    forgotten: list[str] = []
    rechecks = 0

    def recheck() -> None:
        nonlocal rechecks
        rechecks += 1

    channel = RevocationChannel(redis_url, on_revoked=forgotten.append, on_resubscribed=recheck)
    channel.begin()
    try:
        await until(lambda: channel.subscribed, "subscribed")
        assert rechecks == 1
        # Unique: other tests announce revocations on the same channel meanwhile.
        announced = f"key_announced_{time.monotonic_ns()}"
        await publish_revocation(redis_url, announced)
        await until(lambda: announced in forgotten, "the message")
    finally:
        await channel.stop()


async def test_an_unreachable_redis_never_fails_a_revocation():
    url = f"redis://:hunter2-secret@127.0.0.1:{free_port()}/0"
    with pytest.raises(RevocationNotAnnounced) as caught:
        await publish_revocation(url, "key_x")
    assert "hunter2-secret" not in caught.value.message
    assert "redis://:***@127.0.0.1" in caught.value.message
    channel = RevocationChannel(url, on_revoked=print, on_resubscribed=lambda: None)
    assert await channel.publish("key_x") is False
    assert channel.counts["publish_failures"] == 1
    await channel.stop()


def test_keys_revoke_commits_and_warns_when_redis_cannot_be_reached(tmp_path):
    config = tmp_path / "c.yaml"
    url = f"redis://:hunter2-secret@127.0.0.1:{free_port()}/0"
    config.write_text(yaml.safe_dump({"redis": {"url": url}}))

    def keys(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "routekeeper",
                "keys",
                *args,
                "--config",
                str(config),
                "--workspace",
                str(tmp_path / "ws"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )

    created = keys("create", "--tenant", "alpha")
    assert created.returncode == 0, created.stderr
    key_id = created.stdout.splitlines()[0]
    revoked = keys("revoke", key_id)
    assert revoked.returncode == 0, revoked.stderr
    assert "did not take the revocation" in revoked.stderr
    assert "hunter2-secret" not in revoked.stdout + revoked.stderr
    listed = keys("list", "--format", "json")
    assert [k["revoked_at"] is not None for k in yaml.safe_load(listed.stdout)] == [True]


def test_redis_url_must_be_a_redis_url(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_settings(
            None, workspace=tmp_path, overrides={"redis": {"url": "http://u:hunter2@h:6379"}}
        )
    shown = str(caught.value)
    assert "redis.url: must start with redis://" in shown and "hunter2" not in shown


@pytest.mark.redis
@pytest.mark.slow
def test_every_worker_of_serve_workers_2_hears_a_revocation(tmp_path, redis_url):
    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "models": [{"name": "small", "backend": {"type": "echo"}}],
                "decisions": [{"name": "default", "model": "small"}],
                "auth": {"mode": "api_key", "cache_seconds": 5},
                "redis": {"url": redis_url},
            }
        )
    )
    workspace = tmp_path / "ws"

    def keys(*args: str) -> list[str]:
        return keys_cli(workspace, config, *args)

    admin = {"authorization": f"Bearer {keys('create', '--tenant', 'ops', '--role', 'admin')[-1]}"}
    member_lines = keys("create", "--tenant", "alpha")
    member = {"authorization": f"Bearer {member_lines[-1]}"}
    # Started without the harness's wait: both workers' readiness is read with the admin key.
    server = ServerProcess(workspace=workspace, config=config, workers=2)
    server.start(wait_ready=False)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                status = httpx.get(f"{server.url}/api/status", headers=admin, timeout=5)
                body = status.json() if status.status_code == 200 else {}
            except httpx.HTTPError:
                body = {}
            keys_row = next((r for r in body.get("surfaces", []) if r["name"] == "api_keys"), {})
            workers = keys_row.get("workers") or {}
            if (
                body.get("phase") == "ready"
                and len(workers) == 2
                and all((w.get("revocations") or {}).get("subscribed") for w in workers.values())
            ):
                break
            assert time.monotonic() < deadline, server.log_tail()
            time.sleep(0.1)

        def answers() -> set[int]:
            # A new connection per request, so both workers answer some.
            return {
                httpx.get(f"{server.url}/v1/models", headers=member, timeout=5).status_code
                for _ in range(20)
            }

        assert answers() == {200}
        began = time.monotonic()
        revoked = httpx.post(
            f"{server.url}/api/keys/{member_lines[0]}/revoke", headers=admin, timeout=10
        )
        assert revoked.status_code == 200, revoked.text
        while answers() != {401}:
            assert time.monotonic() - began < 5, server.log_tail()
        print(
            f"serve --workers 2 with Redis: every worker refuses after {time.monotonic() - began:.3f} s"
        )
    finally:
        server.stop_quietly()
