"""``/api/keys`` input checks on SQLite and PostgreSQL (auth off: the management API is open
to the local operator), and the same checks in ``routekeeper keys create``."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from fastapi.testclient import TestClient

from routekeeper.server.app import create_app


@pytest.fixture
def client(state_settings):
    with TestClient(create_app(state_settings)) as client:
        deadline = time.monotonic() + 30
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, client.get("/readyz").json()
            time.sleep(0.05)
        yield client


@pytest.mark.parametrize(
    "body,param",
    [
        ({"tenant": "a", "expires_in": "999999w"}, "expires_in"),  # past year 9999
        ({"tenant": "a", "expires_in": "\u0661d"}, "expires_in"),  # an Arabic-Indic digit
        ({"tenant": "a", "expires_in": "0d"}, "expires_in"),
        ({"tenant": "a b"}, "tenant"),
        ({"tenant": "a", "label": "bell\u0007"}, "label"),
        ({"tenant": "a", "role": "root"}, "role"),
        ({"tenant": "a", "requests_per_minute": 0}, "requests_per_minute"),
        ({"tenant": "a", "requests_per_minute": 10**30}, "requests_per_minute"),
        ({"tenant": "a", "secret": "rk_mine"}, "secret"),
    ],
)
def test_bad_key_fields_are_a_400_naming_them_and_create_nothing(client, body, param):
    response = client.post("/api/keys", json=body)
    assert response.status_code == 400, response.text
    problems = response.json()["error"]["details"]["problems"]
    assert [p["param"] for p in problems] == [param]
    assert client.get("/api/keys").json()["data"] == []


def test_a_key_with_the_longest_lifetime_is_made(client):
    response = client.post("/api/keys", json={"tenant": "a", "expires_in": "5200w"})
    assert response.status_code == 201, response.text
    assert response.json()["expires_at"].startswith("21")  # about a hundred years on


def test_the_cli_refuses_a_lifetime_past_the_calendar_with_a_message(tmp_path):
    done = subprocess.run(
        [
            *(sys.executable, "-m", "routekeeper", "keys", "create", "--tenant", "a"),
            *("--expires-in", "999999w", "--workspace", str(tmp_path / "ws")),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "at most 100 years" in done.stderr
    assert "Traceback" not in done.stderr
