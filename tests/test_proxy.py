"""The routing proxy end to end: the real server process, the official openai SDK as the
client, the fake upstream on a real socket."""

import json
import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from routekeeper.testing import FakeUpstream, HandlerServer, Reply, Seen, ServerProcess

# One worker starts the module's server for all of its tests (pytest-xdist, --dist loadgroup).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("proxy-server")]
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "routekeeper.yaml"
MSG = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def upstream():
    with FakeUpstream(models=["qwen-small", "qwen-large"], require_api_key="sk-test") as up:
        yield up


@pytest.fixture(scope="module")
def router(upstream, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("proxy")
    config = {
        "models": [
            {
                "name": "small",
                "backend": {
                    "type": "openai",
                    "base_url": upstream.base_url,
                    "model": "qwen-small",
                    "api_key_env": "RK_TEST_KEY",
                    "timeout_seconds": 1.5,
                },
            },
            {
                "name": "large",
                "backend": {
                    "type": "openai",
                    "base_url": upstream.base_url,
                    "model": "qwen-large",
                    "api_key_env": "RK_TEST_KEY",
                },
            },
            {
                "name": "nowhere",
                "backend": {
                    "type": "openai",
                    "base_url": f"http://127.0.0.1:{closed_port()}/v1",
                    "model": "x",
                },
            },
        ],
        "signals": {"keywords": [{"name": "code", "any": ["python"]}]},
        "decisions": [
            {"name": "coding", "priority": 10, "when": "keywords:code", "model": "large"},
            {"name": "default", "model": "small"},
        ],
    }
    config["server"] = {"sse_ping_seconds": 0.5}
    config["replay"] = {"flush_interval_ms": 20}
    path = tmp / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    with ServerProcess(workspace=tmp / "ws", config=path, env={"RK_TEST_KEY": "sk-test"}) as server:
        yield server


@pytest.fixture
def up(upstream):
    upstream.reset()
    return upstream


def closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        return sock.getsockname()[1]


def sdk(server: ServerProcess, **kwargs) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="client-key", max_retries=0, **kwargs)


def test_make_run_example_with_the_sdk(tmp_path):
    with ServerProcess(workspace=tmp_path / "ws", config=EXAMPLE) as server:
        client = sdk(server)
        raw = client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": "my python code fails"}]
        )
        assert raw.headers["x-routekeeper-decision"] == "coding"
        assert raw.headers["x-routekeeper-model"] == "large"
        assert raw.parse().choices[0].message.content.startswith("echo:large")
        raw = client.chat.completions.with_raw_response.create(model="auto", messages=MSG)
        assert raw.headers["x-routekeeper-decision"] == "default"
        assert raw.parse().choices[0].message.content.startswith("echo:small")
        text = "".join(
            c.choices[0].delta.content or ""
            for c in client.chat.completions.create(model="auto", messages=MSG, stream=True)
        )
        assert text == "echo:small: hello there"
        with pytest.raises(openai.NotFoundError) as info:
            client.chat.completions.create(model="nope", messages=MSG)
        assert info.value.code == "model_not_found"
        assert [m.id for m in client.models.list()] == ["small", "large", "auto"]


def test_routes_and_passes_through_with_the_upstream_key(router, up):
    client = sdk(router)
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "python please"}]
    )
    assert raw.headers["x-routekeeper-model"] == "large"
    assert raw.parse().choices[0].message.content == "fake:qwen-large:python please"
    raw = client.chat.completions.with_raw_response.create(model="small", messages=MSG)
    assert "x-routekeeper-decision" not in raw.headers  # pass-through
    assert raw.headers["x-routekeeper-model"] == "small"
    sent = up.requests[-1]
    assert sent.body["model"] == "qwen-small"
    assert sent.headers["authorization"] == "Bearer sk-test"  # ours, never the client's


def test_stream_is_relayed_and_usage_only_when_asked(router, up):
    client = sdk(router)
    chunks = list(client.chat.completions.create(model="auto", messages=MSG, stream=True))
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        == "fake:qwen-small:hello there"
    )
    assert all(c.usage is None for c in chunks)
    assert up.requests[-1].body["stream_options"] == {"include_usage": True}  # always upstream
    with httpx.stream(
        "POST",
        f"{router.url}/v1/chat/completions",
        json={"model": "auto", "messages": MSG, "stream": True},
    ) as response:
        frames = [line for line in response.iter_lines() if line.startswith("data:")]
    assert frames[-1] == "data: [DONE]"
    assert all('"usage"' not in f for f in frames)
    chunks = list(
        client.chat.completions.create(
            model="auto", messages=MSG, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0


def error_of(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def post(router, **body):
    return httpx.post(
        f"{router.url}/v1/chat/completions",
        json={"model": "small", "messages": MSG, **body},
        timeout=20,
    )


def test_an_upstream_lone_surrogate_is_relayed_as_sent(router, up):
    # JSON can carry "\ud800", UTF-8 cannot: the answer is relayed escaped, not a 500.
    up.configure(reply="bad \ud800 x")
    response = post(router)
    assert response.status_code == 200, response.text
    assert json.loads(response.content)["choices"][0]["message"]["content"] == "bad \ud800 x"


def test_upstream_500_keeps_its_status(router, up):
    up.configure(error_status=500)
    response = post(router)
    assert response.status_code == 500
    assert error_of(response)["type"] == "server_error"
    up.configure(
        error_status=400,
        error_body={
            "error": {
                "message": "bad temperature",
                "type": "invalid_request_error",
                "param": "temperature",
                "code": None,
            }
        },
    )
    response = post(router)
    assert response.status_code == 400 and error_of(response)["message"] == "bad temperature"
    assert error_of(response)["param"] == "temperature"
    up.configure(
        error_status=400,
        error_body={
            "error": {
                "message": "too long",
                "type": "invalid_request_error",
                "param": "messages",
                "code": "context_length_exceeded",
            }
        },
    )
    error = error_of(post(router))
    assert (error["code"], error["param"]) == ("context_length_exceeded", "messages")


@pytest.mark.parametrize("status", [401, 403])
def test_upstream_auth_failure_is_a_502(router, up, status):
    up.configure(error_status=status)
    response = post(router)
    assert response.status_code == 502
    assert error_of(response)["code"] == "upstream_auth_failed"
    with pytest.raises(openai.APIStatusError) as info:
        sdk(router).chat.completions.create(model="small", messages=MSG)
    assert info.value.status_code == 502  # not AuthenticationError: the client's key is fine


def test_upstream_429_passes_retry_after(router, up):
    up.configure(error_status=429, error_headers={"retry-after": "7"})
    response = post(router)
    assert response.status_code == 429 and response.headers["retry-after"] == "7"
    assert error_of(response)["type"] == "rate_limit_error"
    up.configure(error_status=429, error_headers={"retry-after": "7"})
    with pytest.raises(openai.RateLimitError):
        sdk(router).chat.completions.create(model="small", messages=MSG)


def test_upstream_timeout_is_a_504(router, up):
    up.configure(hang=True)
    started = time.monotonic()
    response = post(router)
    assert response.status_code == 504 and error_of(response)["code"] == "upstream_timeout"
    assert time.monotonic() - started < 10  # the model's timeout_seconds is 1.5


def test_unreachable_upstream_is_a_502(router, up):
    response = post(router, model="nowhere")
    assert response.status_code == 502 and error_of(response)["code"] == "upstream_unreachable"
    response = post(router, model="nowhere", stream=True)
    assert response.status_code == 502


def test_error_before_the_first_byte_of_a_stream_keeps_its_status(router, up):
    up.configure(error_status=503)
    response = post(router, stream=True)
    assert response.status_code == 503 and error_of(response)


def test_error_after_the_first_byte_goes_in_band(router, up):
    up.configure(fail_after_chunks=2)
    with httpx.stream(
        "POST",
        f"{router.url}/v1/chat/completions",
        json={"model": "small", "messages": MSG, "stream": True},
        timeout=20,
    ) as response:
        assert response.status_code == 200
        frames = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert "[DONE]" not in frames
    error = json.loads(frames[-1])["error"]
    assert error["code"] == "upstream_protocol_error" and error["message"]
    assert all("choices" in json.loads(f) for f in frames[:-1]) and len(frames) >= 2


def test_client_disconnect_cancels_the_upstream_request(router, up):
    up.configure(chunk_delay_ms=300, stream_chunks=50)
    with httpx.Client(timeout=20) as client:
        with client.stream(
            "POST",
            f"{router.url}/v1/chat/completions",
            json={"model": "small", "messages": MSG, "stream": True},
        ) as response:
            lines = response.iter_lines()
            assert next(lines).startswith("data:")
        # leaving the block closes our connection mid-stream
    assert up.wait_for_disconnects(1, timeout=5), "the upstream request was not cancelled"


def test_metrics_count_decisions_and_upstream_errors(router, up):
    post(router, model="auto", messages=[{"role": "user", "content": "python"}])
    up.configure(error_status=500)
    post(router)
    text = httpx.get(f"{router.url}/metrics").text
    assert 'routekeeper_requests_total{decision="coding",model="large",outcome="completed"}' in text
    assert 'routekeeper_upstream_errors_total{kind="http",status="500"}' in text
    assert "routekeeper_request_duration_seconds_bucket" in text


def replay_of(router, replay_id: str, timeout: float = 5.0) -> dict:
    """The stored replay record once its final state is flushed."""
    deadline = time.monotonic() + timeout
    while True:
        response = httpx.get(f"{router.url}/api/replay/{replay_id}")
        if response.status_code == 200 and response.json()["lifecycle_state"] != "in_progress":
            return response.json()
        assert time.monotonic() < deadline, response.text
        time.sleep(0.05)


def test_replay_records_each_outcome(router, up):
    ok = post(router, model="auto", messages=[{"role": "user", "content": "python"}])
    record = replay_of(router, ok.headers["x-routekeeper-replay-id"])
    assert (record["lifecycle_state"], record["terminal_reason"]) == (
        "completed",
        "response_complete",
    )
    assert record["decision"] == "coding" and record["selected_model"] == "large"
    assert record["signals"] == {"keywords": [{"name": "code", "score": 1.0}]}
    assert (
        record["total_tokens"] > 0 and record["ttfb_ms"] is not None and record["routing_ms"] >= 0
    )
    up.configure(error_status=500)
    failed = replay_of(router, post(router).headers["x-routekeeper-replay-id"])
    assert (failed["lifecycle_state"], failed["terminal_reason"], failed["upstream_status"]) == (
        "failed",
        "upstream_error",
        500,
    )
    assert failed["decision"] is None  # pass-through
    up.reset()
    up.configure(hang=True)
    timed_out = replay_of(router, post(router).headers["x-routekeeper-replay-id"])
    assert (timed_out["lifecycle_state"], timed_out["terminal_reason"]) == (
        "failed",
        "upstream_timeout",
    )


def _disconnect_after_first_line(router, **body):
    with httpx.Client(timeout=20) as client:
        with client.stream(
            "POST",
            f"{router.url}/v1/chat/completions",
            json={"model": "small", "messages": MSG, **body},
        ) as response:
            replay_id = response.headers["x-routekeeper-replay-id"]
            lines = response.iter_lines()
            assert next(lines).startswith("data:")
    return replay_id


def test_disconnect_mid_stream_is_recorded_client_canceled(router, up):
    up.configure(chunk_delay_ms=300, stream_chunks=50)
    replay_id = _disconnect_after_first_line(router, stream=True)
    assert up.wait_for_disconnects(1, timeout=5)
    record = replay_of(router, replay_id)
    assert (record["lifecycle_state"], record["terminal_reason"]) == ("aborted", "client_canceled")


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_leaving_before_the_first_byte_cancels_the_upstream(router, up, stream):
    up.configure(hang=True)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{router.url}/v1/chat/completions",
            json={"model": "large", "messages": MSG, "stream": stream},
            timeout=0.5,
        )
    assert up.wait_for_disconnects(1, timeout=5), "the upstream request outlived its client"
    records = httpx.get(f"{router.url}/api/replay", params={"model": "large", "limit": 1}).json()[
        "data"
    ]
    deadline = time.monotonic() + 5
    while records[0]["lifecycle_state"] == "in_progress" and time.monotonic() < deadline:
        time.sleep(0.05)
        records = httpx.get(
            f"{router.url}/api/replay", params={"model": "large", "limit": 1}
        ).json()["data"]
    assert (records[0]["lifecycle_state"], records[0]["terminal_reason"]) == (
        "aborted",
        "client_canceled",
    )


def test_a_quiet_stream_gets_pings(router, up):
    up.configure(chunk_delay_ms=1300, stream_chunks=2)
    with httpx.stream(
        "POST",
        f"{router.url}/v1/chat/completions",
        json={"model": "small", "messages": MSG, "stream": True},
        timeout=20,
    ) as response:
        lines = [line for line in response.iter_lines() if line]
    assert ": ping" in lines
    assert lines[-1] == "data: [DONE]"


@pytest.mark.parametrize(
    "raw",
    [
        '{"model": "small", "messages": [{"role": "user", "content": "\\ud800"}]}',
        '{"model": "small", "messages": [{"role": "user", "content": "x"}], "temperature": NaN}',
        '{"model": "small", "messages": [{"role": "user", "content": "x"}], "top_p": 1e400}',
    ],
)
def test_json_python_accepts_but_nobody_can_send_is_a_400(router, raw):
    response = httpx.post(
        f"{router.url}/v1/chat/completions",
        content=raw,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert error_of(response)["type"] == "invalid_request_error"
    explain = httpx.post(
        f"{router.url}/api/routing/explain",
        content='{"prompt": "x", "headers": {"x-tenant": "\\ud800"}}',
        headers={"content-type": "application/json"},
    )
    assert explain.status_code == 400


def _shutdown_test_server(tmp_path, upstream, **backend) -> ServerProcess:
    """One model on the fake upstream, a 4 s shutdown budget; started."""
    config = {
        "models": [
            {
                "name": "m",
                "backend": {
                    "type": "openai",
                    "base_url": upstream.base_url,
                    "model": "qwen-small",
                    "api_key_env": "RK_TEST_KEY",
                    **backend,
                },
            }
        ],
        "server": {"graceful_timeout_seconds": 4},
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    return ServerProcess(
        workspace=tmp_path / "ws", config=path, env={"RK_TEST_KEY": "sk-test"}
    ).start()


def test_sigterm_ends_an_open_stream_with_an_in_band_error(tmp_path, upstream):
    upstream.reset()
    upstream.configure(chunk_delay_ms=500, stream_chunks=100)
    server = _shutdown_test_server(tmp_path, upstream)
    try:
        with httpx.stream(
            "POST",
            f"{server.url}/v1/chat/completions",
            json={"model": "m", "messages": MSG, "stream": True},
            timeout=20,
        ) as response:
            lines = response.iter_lines()
            assert next(lines).startswith("data:")
            started = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            rest = [line for line in lines if line.startswith("data:")]
        assert json.loads(rest[-1][6:])["error"]["code"] == "server_shutting_down"
        assert server.wait_exit(15) == 0, server.log_tail()
        assert time.monotonic() - started < 4.5
        assert "Exception in ASGI application" not in server.log()
        server.start()  # the record says the shutdown ended it (it used to say client_canceled)
        record = replay_of(server, response.headers["x-routekeeper-replay-id"])
        assert (record["lifecycle_state"], record["terminal_reason"]) == (
            "aborted",
            "server_shutdown",
        )
    finally:
        server.stop_quietly()


def test_sigterm_answers_a_request_still_waiting_for_its_upstream(tmp_path, upstream):
    """A non-streaming request cut by the shutdown budget used to get the server's plain-text
    500; it gets OpenAI's envelope, a 503 to retry, and its replay id."""
    upstream.reset()
    upstream.configure(hang=True)
    server = _shutdown_test_server(tmp_path, upstream, timeout_seconds=60)
    try:
        answer: list[httpx.Response] = []
        call = threading.Thread(
            target=lambda: answer.append(
                httpx.post(
                    f"{server.url}/v1/chat/completions",
                    json={"model": "m", "messages": MSG},
                    timeout=30,
                )
            )
        )
        call.start()
        assert upstream.wait_for_requests(1, timeout=10)
        server.proc.send_signal(signal.SIGTERM)
        call.join(20)
        response = answer[0]
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "server_shutting_down"
        assert response.headers["retry-after"] == "1"
        assert server.wait_exit(15) == 0, server.log_tail()
        server.start()
        record = replay_of(server, response.headers["x-routekeeper-replay-id"])
        assert (record["lifecycle_state"], record["terminal_reason"]) == (
            "aborted",
            "server_shutdown",
        )
    finally:
        upstream.reset()
        server.stop_quietly()


@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r"])
async def test_sse_events_are_assembled_per_the_spec(eol):
    """Multi-line data fields join with newlines; other fields and comments are skipped; every
    SSE line ending counts, and U+2028 inside a JSON string is not one."""
    from routekeeper.upstream.config import OpenAIModelBackend
    from routekeeper.upstream.openai import OpenAITransport, UpstreamPool

    lines = [": comment", "", "event: x", "id: 1", 'data: {"a":', "data: 1}", ""]
    lines += ['data: {"b": "x\u2028y"}', "", "data: [DONE]", "", ""]
    body = eol.join(lines).encode()

    def handler(request: Seen) -> Reply:
        return Reply(200, body, {"content-type": "text/event-stream"})

    pool = UpstreamPool()
    with HandlerServer(handler) as server:
        try:
            backend = OpenAIModelBackend(base_url=f"{server.url}/v1", model="m")
            transport = OpenAITransport(pool, backend)
            async with transport.stream({"messages": []}) as chunks:
                assert [json.loads(c) for c in [c async for c in chunks]] == [
                    {"a": 1},
                    {"b": "x\u2028y"},
                ]
        finally:
            await pool.aclose()
    assert server.seen[0].json() == {"messages": [], "model": "m"}
