"""Every route declares exactly one access level and /openapi.json shows it; a real server in
``api_key`` mode refuses missing, malformed, unknown, revoked and expired keys on ``/v1``
(401, OpenAI's envelope, code ``invalid_api_key``), member keys on ``/api`` (403, the
``/api`` envelope), keeps ``/livez`` and ``/readyz`` open, and with ``auth.metrics: admin``
wants an admin key for ``/metrics``."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from fastapi.routing import APIRoute
from starlette.routing import Route

from routekeeper.contract.auth import Access, new_secret
from routekeeper.contract.ids import new_id
from routekeeper.http.access import app_routes, route_access
from routekeeper.server.app import create_app
from routekeeper.settings import load_settings
from routekeeper.testing import FakeUpstream, ServerProcess
from routekeeper.testing.tenancy import create_key

OPEN_PATHS = {"/livez", "/readyz"}


@dataclass(frozen=True)
class Served:
    url: str
    keys: dict[str, tuple[str, str]]
    """name -> (key id, secret): admin, member, revoked, expired."""


def _app(tmp_path: Path, **auth: str):
    settings = load_settings(
        None, workspace=tmp_path / "ws", overrides={"auth": {"mode": "api_key", **auth}}
    )
    return create_app(settings)


def test_every_route_declares_exactly_one_access_level(tmp_path):
    app = _app(tmp_path)
    problems, plain, seen = [], {}, set()
    for route in app_routes(app):
        original = getattr(route, "original_route", route)
        if isinstance(original, Route) and original.path == app.openapi_url:
            continue  # FastAPI's own description of the API: open, and holds no state
        if not isinstance(original, APIRoute | Route):
            problems.append(f"{route!r}: neither an API route nor a plain route")
            continue
        levels = route_access(route)
        label = f"{sorted(route.methods or ())} {route.path_format}"
        if len(levels) != 1:
            problems.append(f"{label}: {levels}")
        elif not isinstance(original, APIRoute):
            plain[(route.path_format, *sorted(route.methods or ()))] = levels[0]
        seen.add(route.path_format)
    assert problems == []
    # The two hot paths are plain routes (no dependency resolution), guarded like /v1.
    assert plain == {
        ("/v1/chat/completions", "POST"): Access.MEMBER,
        ("/v1/responses", "POST"): Access.MEMBER,
    }
    assert {"/livez", "/v1/models", "/api/status", "/api/keys"} <= seen


@pytest.mark.parametrize("metrics", ["open", "admin"])
def test_openapi_shows_each_operations_access(tmp_path, metrics):
    spec = _app(tmp_path, metrics=metrics).openapi()
    assert spec["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    problems, count = [], 0
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            count += 1
            access = operation.get("x-routekeeper-access")
            expected = (
                "open"
                if path in OPEN_PATHS or (path == "/metrics" and metrics == "open")
                else "admin"
                if path.startswith("/api/") or path == "/metrics"
                else "member"
                if path.startswith("/v1/")
                else None
            )
            if access != expected:
                problems.append(f"{method} {path}: {access}, expected {expected}")
            security = operation.get("security")
            if (access == "open") != (security is None):
                problems.append(f"{method} {path}: {access} with security {security}")
    assert problems == [] and count >= 30


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("access")
    config = root / "config.yaml"
    with FakeUpstream(models=["m"]) as upstream:
        config.write_text(
            yaml.safe_dump(
                {
                    "auth": {"mode": "api_key", "metrics": "admin"},
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
                    "decisions": [{"name": "default", "model": "scribe"}],
                }
            )
        )
        workspace = root / "ws"
        keys = {
            "admin": create_key(workspace, config, "ops", role="admin"),
            "member": create_key(workspace, config, "alpha"),
            "revoked": create_key(workspace, config, "alpha"),
        }
        command = [sys.executable, "-m", "routekeeper", "keys"]
        expiring = [*command, "create", "--tenant", "alpha", "--expires-in", "1s"]
        done = subprocess.run(
            [*expiring, "--workspace", str(workspace), "--config", str(config)],
            capture_output=True,
            text=True,
            check=True,
        )
        keys["expired"] = (done.stdout.splitlines()[0], done.stdout.splitlines()[-1])
        subprocess.run(
            [
                *command,
                "revoke",
                keys["revoked"][0],
                "--workspace",
                str(workspace),
                "--config",
                str(config),
            ],
            capture_output=True,
            check=True,
        )
        with ServerProcess(workspace=workspace, config=config) as server:
            yield Served(server.url, keys)


V1_CALLS = [
    ("GET", "/v1/models", None),
    ("GET", "/v1/models/scribe", None),
    (
        "POST",
        "/v1/chat/completions",
        {"model": "scribe", "messages": [{"role": "user", "content": "hi"}]},
    ),
    ("POST", "/v1/responses", {"model": "scribe", "input": "hi"}),
    ("GET", f"/v1/responses/{new_id('resp')}", None),
    ("POST", "/v1/conversations", {}),
]


def _call(server, method, path, body, authorization):
    headers = {"authorization": authorization} if authorization is not None else {}
    return httpx.request(method, f"{server.url}{path}", json=body, headers=headers, timeout=30)


def test_v1_refuses_every_unusable_key_with_401_invalid_api_key(server):
    keys = server.keys
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the 1 s key's expiry is behind us
        if (
            _call(server, "GET", "/v1/models", None, f"Bearer {keys['expired'][1]}").status_code
            == 401
        ):
            break
        time.sleep(0.1)
    unusable = {
        "missing": None,
        "empty": "",
        "no scheme": keys["member"][1],
        "basic": f"Basic {keys['member'][1]}",
        "not a routekeeper key": "Bearer sk-abc",
        "truncated": f"Bearer {keys['member'][1][:-1]}",
        "unknown": f"Bearer {new_secret()}",
        "revoked": f"Bearer {keys['revoked'][1]}",
        "expired": f"Bearer {keys['expired'][1]}",
    }
    problems = []
    for method, path, body in V1_CALLS:
        for name, authorization in unusable.items():
            answer = _call(server, method, path, body, authorization)
            error = answer.json().get("error", {})
            if (
                answer.status_code != 401
                or set(error) != {"message", "type", "param", "code"}
                or error["code"] != "invalid_api_key"
                or answer.headers.get("www-authenticate") != "Bearer"
            ):
                problems.append(f"{method} {path} {name}: {answer.status_code} {answer.text}")
        for role in ("member", "admin"):
            answer = _call(server, method, path, body, f"Bearer {keys[role][1]}")
            if answer.status_code >= 400 and answer.status_code != 404:
                problems.append(f"{method} {path} {role}: {answer.status_code} {answer.text}")
    assert problems == []


def test_api_wants_an_admin_key_and_ops_stay_open(server):
    keys = server.keys
    member, admin = f"Bearer {keys['member'][1]}", f"Bearer {keys['admin'][1]}"
    for path in ("/api/status", "/api/replay", "/api/keys", "/api/audit", "/api/responses"):
        refused = _call(server, "GET", path, None, member)
        assert refused.status_code == 403, (path, refused.text)
        assert set(refused.json()["error"]) == {"code", "message", "details"}
        assert refused.json()["error"]["code"] == "permission_denied"
        missing = _call(server, "GET", path, None, None)
        assert missing.status_code == 401 and missing.json()["error"]["code"] == "invalid_api_key"
        assert set(missing.json()["error"]) == {"code", "message", "details"}
        assert _call(server, "GET", path, None, admin).status_code == 200, path
    for path in OPEN_PATHS:
        assert _call(server, "GET", path, None, None).status_code == 200, path
        assert _call(server, "GET", path, None, "Bearer nonsense").status_code == 200, path
    assert _call(server, "GET", "/metrics", None, None).status_code == 401
    assert _call(server, "GET", "/metrics", None, member).status_code == 403
    metrics = _call(server, "GET", "/metrics", None, admin)
    assert metrics.status_code == 200 and "routekeeper_auth_checks" in metrics.text
