"""Kill-and-restart tests of API keys and the audit log, on SQLite and PostgreSQL, through
the real server in ``api_key`` mode: every key whose secret was shown, every answered
revocation and every audit event read before the SIGKILL is there afterwards, and the keys
behave as they did (active keys work, revoked and expired keys are refused)."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import httpx
import pytest

from routekeeper.testing import ServerProcess

pytestmark = pytest.mark.slow

SECTIONS: dict[str, Any] = {
    "models": [{"name": "small", "backend": {"type": "echo"}}],
    "decisions": [{"name": "default", "model": "small"}],
    "auth": {"mode": "api_key"},
}
CHAT = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}


def keys_cli(server: ServerProcess, *args: str) -> list[str]:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "routekeeper",
            "keys",
            *args,
            "--config",
            str(server.config),
            "--workspace",
            str(server.workspace),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def bearer(secret: str) -> dict[str, str]:
    return {"authorization": f"Bearer {secret}"}


def list_all(server: ServerProcess, path: str, admin: dict[str, str]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    after = None
    while True:
        params: dict[str, Any] = {"limit": 100, "order": "asc"}
        if after:
            params["after"] = after
        page = httpx.get(f"{server.url}{path}", params=params, headers=admin, timeout=10)
        assert page.status_code == 200, page.text
        body = page.json()
        items += body["data"]
        if not body["has_more"]:
            return items
        after = body["last_id"]


def chat_status(server: ServerProcess, headers: dict[str, str]) -> int:
    answer = httpx.post(f"{server.url}/v1/chat/completions", json=CHAT, headers=headers, timeout=10)
    return answer.status_code


def without_last_used(keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # Written off the request path, at most once a minute: it may lag, by contract.
    return [{k: v for k, v in key.items() if k != "last_used_at"} for key in keys]


@pytest.mark.restart(surface="api_keys")
@pytest.mark.restart(surface="audit_events")
def test_sigkill_keeps_every_key_revocation_and_audit_event(server_factory):
    first = server_factory(**SECTIONS)
    admin = bearer(keys_cli(first, "create", "--tenant", "ops", "--role", "admin")[-1])
    first.start()

    def create(**body: Any) -> tuple[str, dict[str, str]]:
        created = httpx.post(f"{first.url}/api/keys", json=body, headers=admin, timeout=10)
        assert created.status_code == 201, created.text
        return created.json()["id"], bearer(created.json()["secret"])

    active = [
        create(tenant="alpha", label="alpha \u00e9t\u00e9 \U0001f600"),
        create(tenant="beta", role="admin", requests_per_minute=1000),
        create(tenant="beta", expires_in="30d"),
    ]
    by_api = create(tenant="alpha", label="revoked through the API")
    by_cli = create(tenant="alpha", label="revoked with the CLI")
    expiring = create(tenant="beta", expires_in="1s")
    for _, key in [*active, by_api, by_cli]:
        assert chat_status(first, key) == 200
    revoked = httpx.post(f"{first.url}/api/keys/{by_api[0]}/revoke", headers=admin, timeout=10)
    assert revoked.status_code == 200, revoked.text
    keys_cli(first, "revoke", by_cli[0])
    deadline = time.monotonic() + 10
    while chat_status(first, by_cli[1]) != 401:  # the cache lets it through for a moment
        assert time.monotonic() < deadline, first.log_tail()
        time.sleep(0.1)
    assert chat_status(first, by_api[1]) == 401
    while chat_status(first, expiring[1]) != 401:
        assert time.monotonic() < deadline, first.log_tail()
        time.sleep(0.1)
    keys_before = list_all(first, "/api/keys", admin)
    events_before = list_all(first, "/api/audit", admin)
    first.kill()

    second = server_factory(**SECTIONS).start()
    keys_after = list_all(second, "/api/keys", admin)
    events_after = list_all(second, "/api/audit", admin)
    assert without_last_used(keys_after) == without_last_used(keys_before)
    assert len(keys_after) == 7
    revoked_ids = {k["id"] for k in keys_after if k["revoked_at"] is not None}
    assert revoked_ids == {by_api[0], by_cli[0]}
    # Every event read before the kill is there, unchanged; events written after the read
    # (a used-after-revoke, the expiry) come after it.
    assert events_after[: len(events_before)] == events_before
    kinds = [(e["kind"], e["key_id"]) for e in events_after]
    assert [k for k in kinds if k[0] == "key.created"] == [
        ("key.created", k["id"]) for k in keys_after
    ]
    assert sorted(k for k in kinds if k[0] == "key.revoked") == sorted(
        ("key.revoked", i) for i in revoked_ids
    )
    # The expired key has its event exactly once: from the running sweep or, when the kill
    # came first, from the recovery step that ran before the second replica was ready.
    assert kinds.count(("key.expired", expiring[0])) == 1
    revoked_event = next(
        e for e in events_after if e["key_id"] == by_api[0] and "revoked" in e["kind"]
    )
    assert revoked_event["actor_key_id"] == keys_after[0]["id"]  # the admin key made first

    for _, key in active:
        assert chat_status(second, key) == 200
    for _, key in (by_api, by_cli, expiring):
        assert chat_status(second, key) == 401
    assert second.terminate() == 0
