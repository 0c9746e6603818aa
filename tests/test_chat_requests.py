"""What /v1 accepts and how it says no: Chat Completions fields checked like OpenAI (400 with
``param``), bodies that are not JSON explained in words, upstream answers that cannot be
relayed, ``GET /v1/models/{id}``, and echo answers that the official SDK's types accept."""

import asyncio
import gzip
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import openai
import pytest
import yaml
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from routekeeper.testing import FakeUpstream, ServerProcess
from routekeeper.upstream.config import EchoModelBackend
from routekeeper.upstream.echo import EchoTransport

# One worker starts the module's server for all of its tests (pytest-xdist, --dist loadgroup).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("chat-requests-server")]
USER = [{"role": "user", "content": "hello"}]


class RawUpstream:
    """An upstream answering every chat request with fixed bytes (JSON or SSE)."""

    def __init__(self) -> None:
        self.body = b"{}"
        self.content_type = "application/json"
        self.status = 200
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", "0")))
                self.send_response(upstream.status)
                self.send_header("content-type", upstream.content_type)
                self.send_header("content-length", str(len(upstream.body)))
                self.end_headers()
                self.wfile.write(upstream.body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_port}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def upstreams():
    raw = RawUpstream()
    with FakeUpstream(models=["m"]) as fake:
        yield raw, fake
    raw.close()


@pytest.fixture(scope="module")
def server(upstreams, tmp_path_factory):
    raw, fake = upstreams
    tmp = tmp_path_factory.mktemp("chat")

    def openai_model(name, base_url):
        return {"name": name, "backend": {"type": "openai", "base_url": base_url, "model": "m"}}

    config = {
        "models": [
            {"name": "small", "backend": {"type": "echo"}},
            openai_model("fake", fake.base_url),
            openai_model("raw", raw.base_url),
        ],
        "decisions": [{"name": "default", "model": "small"}],
    }
    path = tmp / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    with ServerProcess(workspace=tmp / "ws", config=path) as server:
        yield server


def post(server, body=None, *, content=None, headers=None):
    return httpx.post(
        f"{server.url}/v1/chat/completions",
        json=body if content is None else None,
        content=content,
        headers=headers,
        timeout=30,
    )


def error_of(response, status=400):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"max_tokens": -1}, "max_tokens"),
        ({"max_completion_tokens": 0}, "max_completion_tokens"),
        ({"temperature": "hot"}, "temperature"),
        ({"temperature": 2.5}, "temperature"),
        ({"top_p": 1.01}, "top_p"),
        ({"n": 0}, "n"),
        ({"n": 1.5}, "n"),
        ({"stream": "yes"}, "stream"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
        (
            {"stream": True, "stream_options": {"include_usage": "yes"}},
            "stream_options.include_usage",
        ),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user"}]}, "messages[0].content"),
        (
            {"messages": [{"role": "user", "content": [{"type": "text"}]}]},
            "messages[0].content[0].text",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            "messages[0].content[0].image_url.url",
        ),
        (
            {"messages": [{"role": "system", "content": [{"type": "image_url"}]}]},
            "messages[0].content[0].type",
        ),
        ({"messages": [{"role": "assistant", "content": None}]}, "messages[0].content"),
        ({"messages": [*USER, {"role": "tool", "content": "42"}]}, "messages[1].tool_call_id"),
        ({"messages": []}, "messages"),
        ({"messages": "hello"}, "messages"),
        ({"model": 7}, "model"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"metadata": {"k": 1}}, "metadata.k"),
        ({"logit_bias": {"50256": 200}}, "logit_bias.50256"),
        (
            {"tools": [{"type": "function", "function": {"name": "has space"}}]},
            "tools[0].function.name",
        ),
        ({"tool_choice": "sometimes"}, "tool_choice"),
        ({"response_format": {"type": "yaml"}}, "response_format.type"),
    ],
)
def test_invalid_fields_are_a_400_naming_the_param(server, change, param):
    """Each of these used to get a 200 and be forwarded unchanged."""
    body = {"model": "auto", "messages": USER, **change}
    error = error_of(post(server, body))
    assert error["param"] == param, error
    assert error["type"] == "invalid_request_error" and error["message"].startswith(param)


def test_the_sdk_sees_a_bad_request_error(server):
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="auto", messages=USER, temperature=3)
    assert info.value.param == "temperature"


def test_valid_shapes_and_unknown_fields_pass_through(server, upstreams):
    _, fake = upstreams
    fake.reset()
    calls = [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    body = {
        "model": "fake",
        "messages": [
            {"role": "developer", "content": [{"type": "text", "text": "be brief"}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}},
                ],
            },
            {"role": "assistant", "content": None, "tool_calls": calls},
            {"role": "tool", "tool_call_id": "call_1", "content": "42"},
        ],
        "temperature": 0,
        "top_p": 1,
        "n": 1,
        "max_tokens": 5,
        "stream": False,
        "stop": None,
        "seed": 7,
        "vendor_extension": {"keep": ["me"]},
    }
    response = post(server, body)
    assert response.status_code == 200, response.text
    forwarded = fake.requests[-1].body
    assert forwarded["vendor_extension"] == {"keep": ["me"]}
    assert forwarded["messages"][2] == body["messages"][2]


@pytest.mark.parametrize(
    ("content", "headers", "message"),
    [
        (
            b'{"model": "auto", "messages": [}',
            {},
            "not valid JSON: expecting value at line 1, column 32",
        ),
        (b'{"model": "auto",\n "messages": [1,]}', {}, "at line 2, column 17"),
        (b"", {}, "the request body is empty"),
        (b"   ", {"content-type": "application/json"}, "the request body is empty"),
        (b'{"model": "\xff"}', {}, "not UTF-8 text (invalid byte at offset 11)"),
        (gzip.compress(b"{}", mtime=0), {"content-encoding": "gzip"}, "content-encoding: gzip"),
        (gzip.compress(b"{}", mtime=0), {}, "gzip-compressed"),
        (b"[" * 100_000 + b"]" * 100_000, {}, "nested too deeply"),
        (b'{"model": "auto", "n": 1' + b"0" * 5000 + b"}", {}, "more than 4300 digits"),
        (
            b'{"model": "auto", "messages": [{"role": "user", "content": NaN}]}',
            {},
            "NaN is not JSON",
        ),
        (b"[1, 2]", {}, "must be a JSON object, got an array"),
    ],
)
def test_unreadable_bodies_are_explained(server, content, headers, message):
    """These used to say '31: JSON decode error' (param '31'), 'Field required' or 'There was
    an error parsing the body'."""
    for path in ("/v1/chat/completions", "/api/routing/explain"):
        response = httpx.post(f"{server.url}{path}", content=content, headers=headers, timeout=30)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert message in error["message"], (path, error)
        if path.startswith("/v1"):
            assert error["param"] is None


def _replay(server, response):
    replay_id = response.headers["x-routekeeper-replay-id"]
    return httpx.get(f"{server.url}/api/replay/{replay_id}").json()


def _recorded_upstream_failure(server, response) -> None:
    record = _replay(server, response)
    assert (record["lifecycle_state"], record["terminal_reason"]) == ("failed", "upstream_error")


def _last_event_error(server, model):
    """Stream a request to ``model``; the response and the in-band error of its last event."""
    with httpx.stream(
        "POST",
        f"{server.url}/v1/chat/completions",
        json={"model": model, "messages": USER, "stream": True},
        timeout=30,
    ) as response:
        assert response.status_code == 200
        events = [line for line in response.iter_lines() if line.startswith("data:")]
    return response, json.loads(events[-1][6:])["error"]


def test_a_deeply_nested_upstream_answer_is_a_502_and_recorded_failed(server, upstreams):
    """Used to be a 500 without a replay id, the record left in_progress."""
    raw, _ = upstreams
    raw.content_type, raw.body = "application/json", b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    response = post(server, {"model": "raw", "messages": USER})
    error = error_of(response, 502)
    assert error["code"] == "upstream_protocol_error"
    _recorded_upstream_failure(server, response)


def test_a_deeply_nested_stream_chunk_is_an_in_band_error_and_recorded_failed(server, upstreams):
    """Used to cut the connection without an error event, recorded client_canceled."""
    raw, _ = upstreams
    nested = b"[" * 100_000 + b"]" * 100_000
    raw.content_type, raw.body = "text/event-stream", b"data: " + nested + b"\n\ndata: [DONE]\n\n"
    response, error = _last_event_error(server, "raw")
    assert error["code"] == "upstream_protocol_error"
    _recorded_upstream_failure(server, response)


def test_a_stream_that_breaks_is_recorded_upstream_error(server, upstreams):
    _, fake = upstreams
    fake.reset()
    fake.configure(fail_after_chunks=2)
    response, error = _last_event_error(server, "fake")
    assert error["code"] == "upstream_protocol_error"
    _recorded_upstream_failure(server, response)
    fake.reset()


def test_models_retrieve(server):
    """GET /v1/models/{id} used to be a 404 for every model."""
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)
    assert client.models.retrieve("small").id == "small"
    assert client.models.retrieve("auto").owned_by == "routekeeper"
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("nope")
    assert info.value.code == "model_not_found"


def test_echo_answers_validate_against_the_sdk_types_strictly():
    echo = EchoTransport("small", EchoModelBackend(type="echo"))
    body = {"model": "auto", "messages": USER, "stream_options": {"include_usage": True}}

    async def answers():
        complete = await echo.complete(body)
        async with echo.stream(body) as chunks:
            return complete, [json.loads(c) async for c in chunks]

    complete, chunks = asyncio.run(answers())
    parsed = ChatCompletion.model_validate(complete, strict=True)
    assert (
        parsed.choices[0].message.refusal is None and "refusal" in complete["choices"][0]["message"]
    )
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk, strict=True)
    assert chunks[-1]["usage"]["total_tokens"] > 0


@pytest.mark.parametrize("stream", [False, True])
def test_an_upstream_error_body_nested_too_deeply_keeps_its_status(server, upstreams, stream):
    """Its error body used to raise while being read: a stream got no answer at all and its
    record stayed in_progress on the live replica."""
    raw, _ = upstreams
    raw.status, raw.content_type = 500, "application/json"
    raw.body = b'{"error":' * 100_000 + b"1" + b"}" * 100_000
    try:
        response = post(server, {"model": "raw", "messages": USER, "stream": stream})
    finally:
        raw.status = 200
    error = error_of(response, 500)
    assert error["code"] == "upstream_error" and "500" in error["message"]
    _recorded_upstream_failure(server, response)


def test_a_session_id_with_control_characters_is_a_400(server):
    """A 256-character id holding U+0010 was accepted, then refused by its column (U+0010 is
    stored escaped): the record was lost behind a 200."""
    import socket

    body = json.dumps({"model": "auto", "messages": USER}).encode()
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        head = (
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n"
            "x-session-id: " + "s" * 255 + "\x10\r\n\r\n"
        )
        sock.sendall(head.encode("latin-1") + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    assert b" 400 " in status_line, answer[:300]
    assert json.loads(rest.split(b"\r\n\r\n", 1)[1])["error"]["param"] == "x-session-id"
