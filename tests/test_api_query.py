"""The /api query string is strict on every endpoint, replay lists are summaries, the replay
aggregate speaks like /metrics, and no page loads anything from the internet. Against the real
server, with the official openai SDK making the requests that are recorded."""

from __future__ import annotations

import re

import httpx
import openai
import pytest
import yaml

from routekeeper.testing import ServerProcess

# One worker starts the module's server for all of its tests (pytest-xdist, --dist loadgroup).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("api-query-server")]

CONFIG = {
    "models": [
        {
            "name": "priced",
            "backend": {"type": "echo"},
            "pricing": {"prompt_per_1m": 1000.0, "completion_per_1m": 2000.0},
        },
        {"name": "free", "backend": {"type": "echo"}},
    ],
    "signals": {"keywords": [{"name": "audit", "any": ["audit"]}]},
    "decisions": [
        {
            "name": "audited",
            "priority": 1,
            "when": "keywords:audit",
            "model": "priced",
            "plugins": {"replay": {"capture_request_body": True, "capture_response_body": True}},
        },
        {"name": "default", "model": "priced"},
    ],
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("api-query")
    config = root / "routekeeper.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    with ServerProcess(workspace=root / "ws", config=config) as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
        for model, text in [("auto", "please audit this ✓"), ("auto", "hello"), ("free", "hi")]:
            client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": text}]
            )
        yield server


def get(server: ServerProcess, path: str) -> httpx.Response:
    return httpx.get(f"{server.url}{path}", timeout=10)


def assert_names(response: httpx.Response, *params: str) -> dict:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"code", "message", "details"} and error["code"] == "invalid_request"
    named = [p["param"] for p in error["details"]["problems"]]
    for param in params:
        assert param in named, error
        assert param in error["message"], error
    return error


def api_operations(server: ServerProcess) -> list[tuple[str, str]]:
    """Every /api operation of the real server's OpenAPI, path parameters filled in."""
    spec = get(server, "/openapi.json").json()
    replay_id = get(server, "/api/replay?limit=1").json()["data"][0]["id"]
    out = []
    for path, methods in spec["paths"].items():
        if not path.startswith("/api"):
            continue
        for method, operation in methods.items():
            filled = path.replace("{replay_id}", replay_id)
            for param in operation.get("parameters", []):
                if param["in"] == "path":
                    value = _path_value(param.get("schema", {}))
                    filled = filled.replace("{" + param["name"] + "}", value)
            assert "{" not in filled, filled
            out.append((method.upper(), filled))
    return out


def _path_value(schema: dict) -> str:
    """A well-formed value for a path parameter: an id of the kind its pattern names (no
    such record, which is fine here), else a plain word."""
    match = re.fullmatch(r"\^(\w+)_\[[^]]+\]\{(\d+)\}\$", schema.get("pattern", ""))
    return f"{match[1]}_{'0' * int(match[2])}" if match else "nobody"


def test_every_api_endpoint_refuses_an_unknown_query_parameter(server):
    operations = api_operations(server)
    assert len(operations) >= 8, operations
    for method, path in operations:
        body = {"prompt": "hello"} if method == "POST" else None
        response = httpx.request(
            method, f"{server.url}{path}?lifecyle_state=failed", json=body, timeout=10
        )
        error = assert_names(response, "lifecyle_state")
        assert "unknown query parameter" in error["message"], (method, path, error)


def test_the_misspelt_filter_is_refused_not_ignored(server):
    error = assert_names(get(server, "/api/replay?lifecyle_state=failed"), "lifecyle_state")
    # The message says what the endpoint does accept.
    assert "lifecycle_state" in error["message"]
    assert len(get(server, "/api/replay?lifecycle_state=failed").json()["data"]) == 0


def test_repeated_single_value_parameters_are_refused(server):
    assert_names(get(server, "/api/replay?limit=1&limit=2"), "limit")
    assert_names(get(server, "/api/replay?decision=audited&decision=default"), "decision")
    assert_names(get(server, "/api/replay/aggregate?model=a&model=b"), "model")
    # A parameter declared as a list takes every value.
    both = get(server, "/api/replicas?phase=ready&phase=stopped")
    assert both.status_code == 200 and both.json()["data"], both.text


def test_a_parameter_of_another_endpoint_is_unknown_here(server):
    assert_names(get(server, "/api/replay/aggregate?limit=5"), "limit")
    assert_names(get(server, "/api/replay/sessions/nobody?order=desc"), "order")
    assert_names(get(server, "/api/status?limit=1"), "limit")


def test_since_after_until_is_refused(server):
    error = assert_names(
        get(server, "/api/replay?since=2030-01-02T00:00:00Z&until=2030-01-01T00:00:00Z"),
        "since",
        "until",
    )
    assert "after" in error["message"]
    assert_names(
        get(server, "/api/replay/aggregate?since=2030-01-02T00:00:00&until=2030-01-01T00:00:00"),
        "since",
    )
    same = get(server, "/api/replay?since=2030-01-01T00:00:00Z&until=2030-01-01T00:00:00Z")
    assert same.status_code == 200 and same.json()["data"] == []


@pytest.mark.parametrize("path", ["/api/replay", "/api/replay/aggregate"])
def test_times_without_a_utc_equivalent_are_refused(server, path):
    """Year 1 east of Greenwich (or year 9999 west of it) used to be a 500 on both backends."""
    assert_names(get(server, f"{path}?since=0001-01-01T00:00:00%2B01:00"), "since")
    assert_names(get(server, f"{path}?until=9999-12-31T23:59:59-05:00"), "until")


BODY_FIELDS = {
    "request_body",
    "request_body_truncated",
    "response_body",
    "response_body_truncated",
    "prompt_text",
}


def test_replay_lists_are_summaries_without_body_fields(server):
    listed = get(server, "/api/replay").json()["data"]
    assert len(listed) == 3
    for record in listed:
        assert not BODY_FIELDS & set(record), record
    audited = next(r for r in listed if r["decision"] == "audited")
    whole = get(server, f"/api/replay/{audited['id']}").json()
    assert BODY_FIELDS <= set(whole)
    assert "please audit this ✓" in whole["request_body"]
    assert whole["request_body_truncated"] is False
    assert set(whole) - BODY_FIELDS == set(audited)
    session = get(server, "/api/replay/sessions/nobody").json()
    assert session["data"] == []


def test_the_aggregate_labels_pass_through_as_metrics_does_and_cost_is_null_when_unknown(server):
    everything = get(server, "/api/replay/aggregate").json()
    metrics = get(server, "/metrics").text
    labels = set(re.findall(r'routekeeper_requests_total\{[^}]*decision="([^"]+)"', metrics))
    assert labels == set(everything["by_decision"]), (labels, everything["by_decision"])
    assert everything["by_decision"]["(pass-through)"] == 1
    assert everything["cost"] > 0
    free = get(server, "/api/replay/aggregate?model=free").json()
    assert free["count"] == 1 and free["cost"] is None
    nothing = get(server, "/api/replay/aggregate?decision=none-such").json()
    assert nothing["count"] == 0 and nothing["cost"] is None


def test_no_page_loads_anything_from_the_internet(server):
    assert get(server, "/docs").status_code == 404
    assert get(server, "/redoc").status_code == 404
    spec = get(server, "/openapi.json")
    assert spec.status_code == 200 and spec.json()["paths"]
    for path in ("/", "/livez", "/readyz", "/openapi.json"):
        text = get(server, path).text
        assert not re.search(r"<(script|link)[^>]+https?://", text), path


def test_other_refusals_name_the_parameter_too(server):
    explain = f"{server.url}/api/routing/explain"
    for name in ("", "body", "query"):
        response = httpx.post(explain, json={"prompt": "hi", name: 1}, timeout=10)
        error = assert_names(response, name)
        assert f"unknown field '{name}'" in error["message"]
    assert_names(httpx.post(explain, json={}, timeout=10), "prompt", "messages")
    assert_names(get(server, "/api/replay?q=%3A"), "q")
    rep = "rep_" + "0" * 26
    assert_names(get(server, f"/api/replicas?after={rep}&before={rep}"), "after", "before")
