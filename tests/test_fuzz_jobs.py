"""schemathesis over /api/jobs* against the real server (``jobs.concurrency: 0``: queued jobs
stay queued): no 5xx whatever the input, the /api error shape on every refusal, and every 400
names the parameter it refuses."""

import itertools

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from routekeeper.testing import ServerProcess

pytestmark = pytest.mark.slow

OPERATIONS = r"^/api/jobs(/[^/]+(/(events|stream|cancel|retry))?)?$"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz-jobs")
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump({"jobs": {"concurrency": 0}}))
    with ServerProcess(workspace=root / "ws", config=config) as server:
        yield server


def fuzz(server, operation, mode, calls):
    key = f"{operation.label} {mode.value}"

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    def check(case):
        response = case.call(base_url=server.url, timeout=30)
        calls[key] = calls.get(key, 0) + 1
        assert response.status_code < 500, (
            f"{case.method} {case.path} -> {response.status_code}: {response.text[:500]}"
        )
        if response.status_code >= 400:
            error = response.json()["error"]
            assert set(error) == {"code", "message", "details"}
            if response.status_code == 400 and not error["message"].startswith("the request "):
                problems = error["details"].get("problems")
                assert problems and all(isinstance(p.get("param"), str) for p in problems), (
                    f"{case.method} {case.path} {case.query} -> 400 names no parameter: {error}"
                )
                assert any(p["param"] in error["message"] for p in problems), error

    try:
        check()
    except Unsatisfiable:
        assert mode is GenerationMode.NEGATIVE, key


def test_no_server_errors(server):
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json").include(
        path_regex=OPERATIONS
    )
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {f"{op.method.upper()} {op.path}" for op in operations} == {
        "POST /api/jobs",
        "GET /api/jobs",
        "GET /api/jobs/{job_id}",
        "GET /api/jobs/{job_id}/events",
        "GET /api/jobs/{job_id}/stream",
        "POST /api/jobs/{job_id}/cancel",
        "POST /api/jobs/{job_id}/retry",
    }
    calls: dict[str, int] = {}
    for operation, mode in itertools.product(operations, list(GenerationMode)):
        fuzz(server, operation, mode, calls)
    assert calls["POST /api/jobs positive"] >= 30 and calls["POST /api/jobs negative"] >= 30
