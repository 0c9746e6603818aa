"""schemathesis against the real server's OpenAPI: no 5xx from the routing proxy, the
Responses and Conversations APIs, the models list, routing explain or the status API, whatever
the input (the echo backend stands in for the upstream, so no 5xx here is a genuine upstream
failure), and every /api 400 names the parameter it refuses."""

import itertools
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from routekeeper.testing import ServerProcess
from routekeeper.testing.tenancy import create_key

pytestmark = pytest.mark.slow
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "routekeeper.yaml"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    workspace = tmp_path_factory.mktemp("fuzz") / "ws"
    with ServerProcess(workspace=workspace, config=EXAMPLE) as server:
        yield server


OPERATIONS = (
    r"^/(v1/chat/completions|v1/models|v1/models/[^/]+|api/routing/explain|api/status|api/replicas"
    r"|api/runtime/events|api/replay|api/replay/aggregate|api/replay/[^/]+|api/replay/sessions/[^/]+"
    r"|v1/responses|v1/responses/[^/]+|v1/responses/[^/]+/input_items|api/responses"
    r"|v1/conversations|v1/conversations/[^/]+|v1/conversations/[^/]+/items"
    r"|v1/conversations/[^/]+/items/[^/]+|api/conversations"
    r"|readyz|livez)$"
)


HTTP_PARSER_REFUSAL = "Invalid HTTP request received."


def fuzz(server, operation, mode, calls: dict[str, int], headers=None) -> None:
    key = f"{operation.label} {mode.value}"

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    def check(case):
        response = case.call(base_url=server.url, timeout=30, headers=headers)
        calls[key] = calls.get(key, 0) + 1
        if response.status_code == 400 and response.text == HTTP_PARSER_REFUSAL:
            # Not HTTP the server's parser accepts (a control character in a header value, say):
            # refused before the app, in plain text, by uvicorn; nothing of routekeeper ran.
            return
        assert response.status_code < 500, (
            f"{case.method} {case.path} -> {response.status_code}: {response.text[:500]}"
        )
        if response.status_code >= 400:
            error = response.json()["error"]
            if case.path.startswith("/v1"):
                assert set(error) == {"message", "type", "param", "code"}
            else:
                assert set(error) == {"code", "message", "details"}
        if (
            response.status_code == 400
            and case.path.startswith("/api")
            and not error["message"].startswith("the request body ")
        ):
            # Every refused /api input names the parameter (query, path or body field) at
            # fault; a body refused as a whole (not JSON, empty, ...) says so in its message.
            problems = error["details"].get("problems")
            assert problems and all(isinstance(p.get("param"), str) for p in problems), (
                f"{case.method} {case.path} {case.query} -> 400 names no parameter: {error}"
            )
            assert any(p["param"] in error["message"] for p in problems), error
        if (
            response.status_code == 400
            and case.path.startswith("/v1")
            and not error["message"].startswith("the request body ")
        ):
            # OpenAI's param names the field at fault (messages[0].role, x-session-id).
            assert isinstance(error["param"], str) and error["param"] in error["message"], (
                f"{case.method} {case.path} -> 400 names no param: {error}"
            )

    try:
        check()
    except Unsatisfiable:
        # Operations without parameters or body have no invalid input to generate.
        assert mode is GenerationMode.NEGATIVE, key


def test_no_server_errors(server):
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json").include(
        path_regex=OPERATIONS
    )
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {
        "/v1/chat/completions",
        "/api/routing/explain",
        "/v1/responses",
        "/v1/responses/{response_id}",
        "/v1/responses/{response_id}/input_items",
        "/api/responses",
        "/v1/conversations",
        "/v1/conversations/{conversation_id}",
        "/v1/conversations/{conversation_id}/items",
        "/v1/conversations/{conversation_id}/items/{item_id}",
        "/api/conversations",
    }
    calls: dict[str, int] = {}
    for operation, mode in itertools.product(operations, list(GenerationMode)):
        fuzz(server, operation, mode, calls)
    print(calls)
    for label in (
        "POST /v1/chat/completions",
        "POST /api/routing/explain",
        "POST /v1/responses",
        "POST /v1/conversations",
    ):
        assert calls[f"{label} positive"] >= 30 and calls[f"{label} negative"] >= 30, calls


KEY_OPERATIONS = r"^/api/(keys|keys/[^/]+|keys/[^/]+/revoke|audit)$"


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz-keys")
    config = root / "config.yaml"
    config.write_text(EXAMPLE.read_text() + "\nauth: {mode: api_key}\n")
    _, secret = create_key(root / "ws", config, "ops", role="admin")
    with ServerProcess(workspace=root / "ws", config=config) as server:
        yield server, {"authorization": f"Bearer {secret}"}


def test_no_server_errors_from_keys_and_audit_with_an_admin_key(auth_server):
    server, admin = auth_server
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json", headers=admin).include(
        path_regex=KEY_OPERATIONS
    )
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {f"{op.method.upper()} {op.path}" for op in operations} == {
        "POST /api/keys",
        "GET /api/keys",
        "GET /api/keys/{key_id}",
        "POST /api/keys/{key_id}/revoke",
        "GET /api/audit",
    }
    calls: dict[str, int] = {}
    for operation, mode in itertools.product(operations, list(GenerationMode)):
        fuzz(server, operation, mode, calls, headers=admin)
    print(calls)
    assert calls["POST /api/keys positive"] >= 30 and calls["POST /api/keys negative"] >= 30
    assert calls["GET /api/audit positive"] >= 30, calls
    # The admin key made keys and the audit log has their events (no 401 hid the calls).
    keys = httpx.get(f"{server.url}/api/keys", headers=admin, params={"limit": 100}).json()
    assert len(keys["data"]) > 10
