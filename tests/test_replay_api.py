"""The replay read API and CLI against the real server."""

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from routekeeper.testing import ServerProcess

# One worker starts the module's server for all of its tests (pytest-xdist, --dist loadgroup).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("replay-api-server")]
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "routekeeper.yaml"


def cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "routekeeper", "replay", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with ServerProcess(
        workspace=tmp_path_factory.mktemp("replay") / "ws", config=EXAMPLE
    ) as server:
        for i in range(6):
            content = "python help" if i % 2 else f"hello {i}"
            response = httpx.post(
                f"{server.url}/v1/chat/completions",
                json={"model": "auto", "messages": [{"role": "user", "content": content}]},
                headers={"x-session-id": "chat-a" if i < 4 else "chat-b"},
            )
            assert response.status_code == 200
        server.wait_flushed()
        yield server


def test_session_records_in_order(server):
    page = httpx.get(f"{server.url}/api/replay/sessions/chat-a").json()
    assert len(page["data"]) == 4
    assert [r["decision"] for r in page["data"]] == ["default", "coding", "default", "coding"]
    assert page["data"][0]["started_at"] <= page["data"][-1]["started_at"]
    assert httpx.get(f"{server.url}/api/replay/sessions/nobody").json()["data"] == []


def test_filters(server):
    coding = httpx.get(f"{server.url}/api/replay", params={"decision": "coding"}).json()["data"]
    assert len(coding) == 3 and {r["selected_model"] for r in coding} == {"large"}
    small = httpx.get(f"{server.url}/api/replay", params={"model": "small"}).json()["data"]
    assert len(small) == 3
    done = httpx.get(f"{server.url}/api/replay", params={"lifecycle_state": "completed"}).json()[
        "data"
    ]
    assert len(done) == 6
    future = httpx.get(f"{server.url}/api/replay", params={"since": "2100-01-01T00:00:00Z"}).json()
    assert future["data"] == []
    bad = httpx.get(f"{server.url}/api/replay", params={"lifecycle_state": "sleeping"})
    assert bad.status_code == 400
    assert httpx.get(f"{server.url}/api/replay/rpl_nope").status_code == 400
    missing = httpx.get(f"{server.url}/api/replay/rpl_" + "0" * 26)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_cli_list_show_tail(server):
    listed = cli("list", "--url", server.url, "--decision", "coding")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.count("coding") == 3
    as_json = json.loads(cli("list", "--url", server.url, "--json", "--limit", "2").stdout)
    assert len(as_json["data"]) == 2 and as_json["has_more"] is True
    shown = json.loads(
        cli("show", as_json["data"][0]["id"], "--url", server.url, "--format", "json").stdout
    )
    assert shown["id"] == as_json["data"][0]["id"]
    tail = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "routekeeper",
            "replay",
            "tail",
            "--url",
            server.url,
            "--interval",
            "0.2",
            "--count",
            "1",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )
    # Records are committed before their answer, so one made before tail's first poll is
    # (rightly) not new to it: keep making records until tail has shown one.
    posted = []
    deadline = time.monotonic() + 30
    while tail.poll() is None and time.monotonic() < deadline:
        response = httpx.post(
            f"{server.url}/v1/chat/completions",
            json={"model": "auto", "messages": [{"role": "user", "content": "tail me"}]},
        )
        posted.append(response.headers["x-routekeeper-replay-id"])
        time.sleep(0.3)
    out, _ = tail.communicate(timeout=30)
    assert tail.returncode == 0
    assert any(replay_id in out for replay_id in posted)
    missing = cli("show", "rpl_" + "0" * 26, "--url", server.url)
    assert missing.returncode == 1 and "404" in missing.stderr


def test_truncate_utf8_never_splits_a_character():
    from routekeeper.router.services.trace import truncate_utf8

    assert truncate_utf8("héllo", 100) == ("héllo", False)
    assert truncate_utf8("héllo", 2) == ("h", True)  # "é" is two bytes: not cut in half
    assert truncate_utf8("€€", 4) == ("€", True)


def wait_flushed(client, timeout: float = 10.0) -> None:
    """ServerProcess.wait_flushed for an app under TestClient: nothing left uncommitted."""
    deadline = time.monotonic() + timeout
    while True:
        rows = client.get("/api/status").json()["surfaces"]
        queued = next(r for r in rows if r["name"] == "router_replay")["component"]["queued"]
        if queued == 0:
            return
        assert time.monotonic() < deadline, f"{queued} replay record(s) still queued"
        time.sleep(0.02)


def test_bodies_are_captured_only_when_the_decision_says_so(tmp_path):
    from fastapi.testclient import TestClient

    from routekeeper.server.app import create_app
    from routekeeper.settings import load_settings

    config = tmp_path / "c.yaml"
    config.write_text(
        "models: [{name: small, backend: {type: echo, chunks: 3}}]\n"
        "signals: {keywords: [{name: secret, any: [secret]}]}\n"
        "decisions:\n"
        "  - {name: audited, priority: 1, when: 'keywords:secret', model: small,\n"
        "     plugins: {replay: {capture_request_body: true, capture_response_body: true, max_body_bytes: 400}}}\n"
        "  - {name: default, model: small}\n"
        "replay: {flush_interval_ms: 10}\n"
    )
    app = create_app(load_settings(config, workspace=tmp_path / "ws"))
    with TestClient(app) as client:
        deadline = time.monotonic() + 20
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        ids = {}
        for name, text, stream in [
            ("plain", "hello", False),
            ("audited", "a secret ✓", False),
            ("streamed", "secret again", True),
            ("long", "secret " + "é" * 300, False),
        ]:
            response = client.post(
                "/v1/chat/completions",
                json={
                    "model": "auto",
                    "stream": stream,
                    "messages": [{"role": "user", "content": text}],
                },
            )
            assert response.status_code == 200
            ids[name] = response.headers["x-routekeeper-replay-id"]
        wait_flushed(client)
        got = {name: client.get(f"/api/replay/{rid}").json() for name, rid in ids.items()}
        listed = client.get("/api/replay").json()["data"]
        searched = client.get("/api/replay", params={"q": "secret again"}).json()["data"]
        assert client.get("/api/replay", params={"q": "%%%"}).status_code == 400
    assert got["plain"]["request_body"] is None and got["plain"]["response_body"] is None
    audited = got["audited"]
    assert json.loads(audited["request_body"])["messages"][0]["content"] == "a secret ✓"
    assert (
        json.loads(audited["response_body"])["choices"][0]["message"]["content"]
        == "echo:small: a secret ✓"
    )
    assert audited["request_body_truncated"] is False
    assert got["streamed"]["response_body"] == "echo:small: secret again"
    long = got["long"]
    assert long["request_body_truncated"] is True and long["response_body_truncated"] is True
    assert len(long["request_body"].encode()) <= 400 and long["request_body"].endswith("é")
    assert len(listed) == 4
    assert [r["id"] for r in searched] == [ids["streamed"]]
    assert got["audited"]["prompt_text"] == "a secret ✓"
    assert got["plain"]["prompt_text"] is None  # nothing captured, nothing searchable
    assert all("request_body" not in r and "response_body" not in r for r in listed)
