"""The replay read API and CLI against the real server."""

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from routekeeper.testing import ServerProcess

pytestmark = pytest.mark.slow
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
        time.sleep(0.5)  # > flush_interval_ms
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
    shown = json.loads(cli("show", as_json["data"][0]["id"], "--url", server.url).stdout)
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
    time.sleep(1.0)
    response = httpx.post(
        f"{server.url}/v1/chat/completions",
        json={"model": "auto", "messages": [{"role": "user", "content": "tail me"}]},
    )
    out, _ = tail.communicate(timeout=30)
    assert tail.returncode == 0
    assert response.headers["x-routekeeper-replay-id"] in out
    missing = cli("show", "rpl_" + "0" * 26, "--url", server.url)
    assert missing.returncode == 1 and "404" in missing.stderr
