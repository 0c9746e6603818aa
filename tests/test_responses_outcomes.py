"""How a response ends, through the real server and the fake upstream: the length limit is
``incomplete``, a client leaving its stream is ``cancelled`` with the output it had."""

import time

import httpx
import openai
import pytest

from routekeeper.testing import FakeUpstream, ServerProcess

pytestmark = pytest.mark.slow


@pytest.fixture
def upstream():
    with FakeUpstream(models=["m"]) as upstream:
        yield upstream


@pytest.fixture
def server(upstream, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(
        "models:\n"
        f"  - {{name: far, backend: {{type: openai, base_url: '{upstream.base_url}', model: m}}}}\n"
        "decisions:\n  - {name: default, model: far}\n"
    )
    with ServerProcess(workspace=tmp_path / "ws", config=config) as server:
        yield server


@pytest.fixture
def sdk(server):
    with openai.OpenAI(
        base_url=f"{server.url}/v1", api_key="x", _strict_response_validation=True, max_retries=0
    ) as sdk:
        yield sdk


def test_the_length_limit_is_incomplete(upstream, sdk):
    upstream.configure(finish_reason="length")
    created = sdk.responses.create(model="far", input="long", max_output_tokens=16)
    assert created.status == "incomplete"
    assert created.incomplete_details.reason == "max_output_tokens"
    assert created.output[0].status == "incomplete"
    with sdk.responses.stream(model="far", input="long") as stream:
        kinds = [e.type for e in stream]
    assert kinds[-1] == "response.incomplete"
    stored = sdk.responses.retrieve(created.id)
    assert stored.status == "incomplete" and stored.incomplete_details.reason == "max_output_tokens"


def test_a_client_leaving_its_stream_cancels_the_response_keeping_its_output(upstream, server, sdk):
    upstream.configure(chunk_delay_ms=30_000, stream_chunks=3, reply="first second third")
    response_id = None
    with httpx.stream(
        "POST",
        f"{server.url}/v1/responses",
        json={"model": "far", "input": "go", "stream": True},
        timeout=30,
    ) as response:
        for line in response.iter_lines():
            if '"response.created"' in line:
                response_id = line.split('"id":"', 1)[1].split('"', 1)[0]
            if '"response.output_text.delta"' in line:
                break  # leave after the first piece of text
    assert response_id is not None
    assert upstream.wait_for_disconnects(1, timeout=10)
    deadline = time.monotonic() + 10
    while (stored := sdk.responses.retrieve(response_id)).status == "in_progress":
        assert time.monotonic() < deadline, server.log_tail()
        time.sleep(0.05)
    assert stored.status == "cancelled"
    assert stored.output[0].content[0].text == "first "
    assert stored.output[0].status == "incomplete"


def test_an_upstream_breaking_mid_stream_is_a_failed_event_and_a_failed_response(
    upstream, server, sdk
):
    upstream.configure(fail_after_chunks=2, stream_chunks=4, reply="aaaa bbbb cccc dddd")
    with httpx.stream(
        "POST",
        f"{server.url}/v1/responses",
        json={"model": "far", "input": "go", "stream": True},
        timeout=30,
    ) as response:
        lines = [line for line in response.iter_lines() if line.startswith("event: ")]
        assert response.status_code == 200
    kinds = [line.removeprefix("event: ") for line in lines]
    assert kinds[0] == "response.created" and kinds[-1] == "response.failed"
    assert "response.completed" not in kinds
    listed = httpx.get(f"{server.url}/api/responses", timeout=10).json()["data"]
    stored = sdk.responses.retrieve(listed[0]["id"])
    assert stored.status == "failed" and stored.error.code == "server_error"
    assert stored.output[0].content[0].text == "aaaa bbbb"  # what arrived before the break
