"""No API key secret and no DSN password ever shows: a server in ``api_key`` mode with
``server.log_level: debug``, on PostgreSQL through a DSN with a password (and a proxy that
cuts the database away for a while), bodies captured by replay; keys are created, used
(good, unknown, malformed, revoked) and refused while the database is down. Then no secret
and no password may be in the server's log (stdout and stderr), any error body,
``/api/status``, ``routekeeper status``, ``routekeeper state inventory``, the replay records
(bodies included) or what the upstream was sent."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
import yaml

from routekeeper.contract.auth import new_secret
from routekeeper.testing import (
    FakeUpstream,
    ServerProcess,
    TcpProxy,
    fresh_postgres_database,
    shared_postgres_state,
)
from routekeeper.testing.pytest_plugin import require_postgres
from routekeeper.testing.tenancy import create_key

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
NAMES = ("admin", "member", "revoked", "unknown", "password")


def _with_password(dsn: str, password: str) -> str:
    parts = urlsplit(dsn)
    user = parts.username or "postgres"
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{parts.hostname}:{parts.port}"))


def _cli(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "routekeeper", *args], capture_output=True, text=True, timeout=60
    )
    return f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"


def test_no_key_secret_or_dsn_password_appears_anywhere(tmp_path):
    require_postgres()
    password = "pw-" + secrets.token_hex(16)
    seen: list[str] = []  # every text a client or operator gets to see

    def answer(response: httpx.Response) -> httpx.Response:
        seen.append(
            f"{response.request.method} {response.request.url} -> "
            f"{response.status_code} {response.headers} {response.text}"
        )
        return response

    with (
        fresh_postgres_database() as dsn,
        TcpProxy(urlsplit(dsn).hostname or "127.0.0.1", urlsplit(dsn).port or 5432) as proxy,
        FakeUpstream(models=["m"]) as upstream,
    ):
        capture = {"capture_request_body": True, "capture_response_body": True}
        config = tmp_path / "config.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "state": shared_postgres_state(
                        proxy.dsn_for(_with_password(dsn, password)), connect_timeout_seconds=2
                    ),
                    "auth": {"mode": "api_key", "cache_seconds": 0.2, "offline_grace_seconds": 0},
                    "server": {"log_level": "debug"},
                    "models": [
                        {
                            "name": "scribe",
                            "backend": {
                                "type": "openai",
                                "base_url": upstream.base_url,
                                "model": "m",
                            },
                        }
                    ],
                    "decisions": [
                        {"name": "default", "model": "scribe", "plugins": {"replay": capture}}
                    ],
                }
            )
        )
        workspace = tmp_path / "ws"
        admin_id, admin_secret = create_key(workspace, config, "ops", role="admin")
        server = ServerProcess(workspace=workspace, config=config)
        server.api_key = admin_secret
        server.start()
        admin = {"authorization": f"Bearer {admin_secret}"}
        url = server.url

        made = httpx.post(f"{url}/api/keys", json={"tenant": "alpha"}, headers=admin, timeout=30)
        assert made.status_code == 201  # the one answer that holds a secret, by design
        member_id, member = made.json()["id"], made.json()["secret"]
        made = httpx.post(f"{url}/api/keys", json={"tenant": "alpha"}, headers=admin, timeout=30)
        revoked_id, revoked = made.json()["id"], made.json()["secret"]
        unknown = new_secret()
        secret_list = [admin_secret, member, revoked, unknown, password]

        def chat(authorization: str, text: str) -> httpx.Response:
            return answer(
                httpx.post(
                    f"{url}/v1/chat/completions",
                    json={"model": "auto", "messages": [{"role": "user", "content": text}]},
                    headers={"authorization": authorization, "x-session-id": "s1"},
                    timeout=30,
                )
            )

        assert chat(f"Bearer {member}", "a good question").status_code == 200
        with httpx.stream(
            "POST",
            f"{url}/v1/chat/completions",
            json={
                "model": "scribe",
                "stream": True,
                "messages": [{"role": "user", "content": "s"}],
            },
            headers={"authorization": f"Bearer {member}"},
            timeout=30,
        ) as streamed:
            seen.append(streamed.read().decode())
        assert (
            answer(
                httpx.post(
                    f"{url}/v1/responses",
                    json={"model": "scribe", "input": "hello"},
                    headers={"authorization": f"Bearer {member}"},
                    timeout=30,
                )
            ).status_code
            == 200
        )
        assert chat(f"Bearer {unknown}", "unknown key").status_code == 401
        assert chat(f"Bearer {member}x", "malformed key").status_code == 401
        assert chat(member, "no scheme").status_code == 401
        assert chat(f"Basic {member}", "wrong scheme").status_code == 401
        assert chat(f"Bearer {revoked}", "before revoking").status_code == 200
        answer(httpx.post(f"{url}/api/keys/{revoked_id}/revoke", headers=admin, timeout=30))
        assert chat(f"Bearer {revoked}", "after revoking").status_code == 401
        assert (
            answer(
                httpx.get(f"{url}/api/status", headers={"authorization": f"Bearer {member}"})
            ).status_code
            == 403
        )
        server.wait_flushed()

        # The database goes away: keys cannot be checked, storage errors are answered.
        proxy.cut()
        deadline = time.monotonic() + 20
        while chat(f"Bearer {member}", "while the database is down").status_code != 503:
            assert time.monotonic() < deadline, seen[-1]
            time.sleep(0.2)
        answer(httpx.get(f"{url}/readyz", timeout=30))
        answer(httpx.get(f"{url}/api/status", headers=admin, timeout=30))
        seen.append(_cli("status", "--url", url, "--api-key", admin_secret, "--format", "json"))
        proxy.restore()
        deadline = time.monotonic() + 30
        while chat(f"Bearer {member}", "the database is back").status_code != 200:
            assert time.monotonic() < deadline, seen[-1]
            time.sleep(0.2)
        server.wait_flushed()

        for format in ("table", "json"):
            seen.append(_cli("status", "--url", url, "--api-key", admin_secret, "--format", format))
        status = answer(httpx.get(f"{url}/api/status", headers=admin, timeout=30))
        assert status.status_code == 200
        seen.append(
            _cli("state", "inventory", "--config", str(config), "--workspace", str(workspace))
        )
        seen.append(_cli("state", "check", "--config", str(config), "--workspace", str(workspace)))
        seen.append(_cli("keys", "list", "--config", str(config), "--workspace", str(workspace)))
        records = server.list_all("/api/replay")
        assert len(records) >= 5
        bodies = [
            answer(httpx.get(f"{url}/api/replay/{r['id']}", headers=admin, timeout=30)).json()
            for r in records
        ]
        captured = [b["request_body"] for b in bodies if b.get("request_body")]
        assert captured, "no request body was captured"
        seen.append(answer(httpx.get(f"{url}/api/audit", headers=admin, timeout=30)).text)
        seen.append(answer(httpx.get(f"{url}/api/keys", headers=admin, timeout=30)).text)
        seen.append(answer(httpx.get(f"{url}/metrics", headers=admin, timeout=30)).text)
        seen.append(json.dumps([r.headers for r in upstream.requests], default=str))
        seen.append(json.dumps([r.body for r in upstream.requests], default=str))
        server.terminate()
        seen.append(server.log())
        # log_level debug took effect: the access log (only at debug) is there.
        assert "uvicorn.access" in server.log() and '"POST /v1/chat/completions' in server.log()

    leaks = [
        (name, text[max(0, text.index(s) - 200) : text.index(s) + 60])
        for text in seen
        for name, s in zip(NAMES, secret_list, strict=True)
        if s in text
    ]
    assert leaks == []
    # And no key's id is a stand-in for its secret: ids may show, secrets never.
    assert any(member_id in text for text in seen) and any(admin_id in text for text in seen)
