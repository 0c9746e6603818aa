"""The fake OpenAI-compatible upstream: the official SDK as a client for the happy paths, raw
httpx for the fault knobs, disconnect accounting and timing."""

import base64
import json
import math
import struct
import threading
import time

import httpx
import openai
import pytest

from routekeeper.testing.fake_upstream import FakeUpstream, error_envelope, fake_embedding

USER = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]


@pytest.fixture
def up():
    with FakeUpstream(models=["small", "large"], embedding_dim=32) as server:
        yield server


@pytest.fixture
def sdk(up):
    """Official SDK clients on the fake, closed after the test."""
    clients: list[openai.OpenAI] = []

    def make(api_key: str = "sk-test") -> openai.OpenAI:
        clients.append(openai.OpenAI(base_url=up.base_url, api_key=api_key, max_retries=0))
        return clients[-1]

    yield make
    for client in clients:
        client.close()


def chat_url(up: FakeUpstream) -> str:
    return f"{up.base_url}/chat/completions"


def sse_events(resp: httpx.Response) -> list[str]:
    return [line.removeprefix("data: ") for line in resp.iter_lines() if line.startswith("data: ")]


def test_non_streaming_completion_and_recorded_request(up, sdk):
    reply = sdk().chat.completions.create(model="small", messages=USER, temperature=0)

    assert reply.object == "chat.completion"
    assert reply.model == "small"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == "fake:small:hello there"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (4, 2)
    assert reply.usage.total_tokens == 6

    [seen] = up.requests
    assert (seen.method, seen.path) == ("POST", "/v1/chat/completions")
    assert seen.headers["authorization"] == "Bearer sk-test"
    assert seen.headers["content-type"] == "application/json"
    assert seen.body["model"] == "small"
    assert seen.body["messages"] == USER
    assert seen.body["temperature"] == 0


def test_reply_uses_last_user_message_and_content_parts(up, sdk):
    messages = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": "second"}]},
    ]
    reply = sdk().chat.completions.create(model="large", messages=messages)
    assert reply.choices[0].message.content == "fake:large:second"

    up.reply = lambda body: f"custom for {body['model']}"
    reply = sdk().chat.completions.create(model="large", messages=messages)
    assert reply.choices[0].message.content == "custom for large"


def test_streaming_without_usage(up, sdk):
    up.stream_chunks = 3
    chunks = list(sdk().chat.completions.create(model="small", messages=USER, stream=True))

    assert [c.object for c in chunks] == ["chat.completion.chunk"] * 4
    assert len({c.id for c in chunks}) == 1
    assert all(len(c.choices) == 1 for c in chunks)
    contents = [c.choices[0].delta.content for c in chunks[:3]]
    assert all(contents)
    assert "".join(contents) == "fake:small:hello there"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks] == [None, None, None, "stop"]
    assert all(c.usage is None for c in chunks)


def test_streaming_with_include_usage(up, sdk):
    chunks = list(
        sdk().chat.completions.create(
            model="small", messages=USER, stream=True, stream_options={"include_usage": True}
        )
    )

    assert len(chunks) == 4 + 1 + 1  # content chunks, finish chunk, usage chunk
    assert "".join(c.choices[0].delta.content or "" for c in chunks[:-1]) == (
        "fake:small:hello there"
    )
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (4, 2)
    assert last.usage.total_tokens == 6
    assert up.requests[0].body["stream_options"] == {"include_usage": True}


def test_stream_wire_format(up):
    body = {"model": "m", "messages": USER, "stream": True}
    with httpx.stream("POST", chat_url(up), json=body) as plain:
        assert plain.status_code == 200
        assert plain.headers["content-type"].startswith("text/event-stream")
        raw = plain.read().decode()
    assert raw.endswith("data: [DONE]\n\n")
    frames = [f for f in raw.split("\n\n") if f]
    assert all(f.startswith("data: ") for f in frames)
    assert all("usage" not in json.loads(f[6:]) for f in frames[:-1])

    body["stream_options"] = {"include_usage": True}
    with httpx.stream("POST", chat_url(up), json=body) as with_usage:
        events = sse_events(with_usage)
    assert events[-1] == "[DONE]"
    parsed = [json.loads(e) for e in events[:-1]]
    assert all("usage" in p and p["usage"] is None for p in parsed[:-1])
    assert parsed[-1]["choices"] == []
    assert parsed[-1]["usage"]["total_tokens"] == 6


def test_models_list(up, sdk):
    assert [m.id for m in sdk().models.list()] == ["small", "large"]
    assert up.requests == []  # only chat and embeddings requests are recorded


def test_embeddings_are_deterministic_unit_vectors(up, sdk):
    client = sdk()
    first = client.embeddings.create(model="emb", input=["the cat sat", "a dog"])
    again = client.embeddings.create(model="emb", input="the cat sat")

    assert [d.index for d in first.data] == [0, 1]
    vectors = [d.embedding for d in first.data]
    assert all(len(v) == 32 for v in vectors)
    # the SDK asks for base64 and decodes float32s
    assert all(math.isclose(math.sqrt(sum(x * x for x in v)), 1.0, rel_tol=1e-6) for v in vectors)
    assert again.data[0].embedding == vectors[0]
    assert vectors[0] != vectors[1]
    assert vectors[0] == pytest.approx(fake_embedding("the cat sat", 32))
    assert first.usage.prompt_tokens == 5
    assert first.model == "emb"
    assert up.requests[0].path == "/v1/embeddings"

    plain = httpx.post(f"{up.base_url}/embeddings", json={"model": "emb", "input": "the cat sat"})
    exact = plain.json()["data"][0]["embedding"]
    assert exact == fake_embedding("the cat sat", 32)
    assert math.isclose(math.sqrt(sum(x * x for x in exact)), 1.0)
    assert exact == pytest.approx(vectors[0], abs=1e-6)

    short = client.embeddings.create(model="emb", input="the cat sat", dimensions=8)
    assert len(short.data[0].embedding) == 8

    packed = client.embeddings.create(model="emb", input="the cat sat", encoding_format="base64")
    encoded = packed.data[0].embedding
    assert isinstance(encoded, str)
    decoded = struct.unpack("<32f", base64.b64decode(encoded))
    assert decoded == pytest.approx(vectors[0], abs=1e-6)


@pytest.mark.parametrize("status", [500, 401, 429])
def test_error_status_uses_the_openai_envelope(up, status):
    up.error_status = status
    resp = httpx.post(chat_url(up), json={"model": "m", "messages": USER})
    assert resp.status_code == status
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error == error_envelope(status)["error"]
    assert error["type"] == ("server_error" if status == 500 else "invalid_request_error")


def test_error_headers_and_custom_body(up, sdk):
    up.configure(error_status=429, error_headers={"retry-after": "7"})
    with pytest.raises(openai.RateLimitError) as caught:
        sdk().chat.completions.create(model="m", messages=USER)
    assert caught.value.response.headers["retry-after"] == "7"

    up.error_body = {"error": {"message": "slow down", "type": "x", "param": None, "code": "c"}}
    resp = httpx.post(chat_url(up), json={"model": "m", "messages": USER})
    assert resp.status_code == 429
    assert resp.json()["error"]["message"] == "slow down"
    assert resp.headers["retry-after"] == "7"

    up.error_status = None
    assert httpx.post(chat_url(up), json={"model": "m", "messages": USER}).status_code == 200


def test_hang_times_out_the_client_and_counts_a_disconnect(up):
    up.hang = True
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(chat_url(up), json={"model": "m", "messages": USER}, timeout=0.3)
    assert time.monotonic() - started >= 0.3
    assert up.wait_for_disconnects(1, timeout=2)
    assert len(up.requests) == 1


def test_close_is_prompt_with_a_hung_request_in_flight():
    up = FakeUpstream(hang=True).start()
    outcome: list[BaseException | httpx.Response] = []

    def call() -> None:
        try:
            outcome.append(httpx.post(chat_url(up), json={"model": "m"}, timeout=30))
        except httpx.HTTPError as exc:
            outcome.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    assert up.wait_for_requests(1)
    started = time.monotonic()
    up.close()
    assert time.monotonic() - started < 2
    caller.join(timeout=5)
    assert len(outcome) == 1
    assert isinstance(outcome[0], httpx.RemoteProtocolError | httpx.ReadError)
    assert up.disconnects == 0  # the fake hung up, not the client
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{up.base_url}/models", timeout=1)


def test_fail_after_chunks_cuts_the_stream(up):
    up.fail_after_chunks = 2
    body = {"model": "m", "messages": USER, "stream": True}
    events: list[str] = []
    with pytest.raises(httpx.RemoteProtocolError):
        with httpx.stream("POST", chat_url(up), json=body) as resp:
            assert resp.status_code == 200
            for line in resp.iter_lines():
                if line.startswith("data: "):
                    events.append(line[6:])
    assert len(events) == 2
    assert "[DONE]" not in events
    assert json.loads(events[0])["choices"][0]["delta"]["role"] == "assistant"
    assert up.disconnects == 0

    up.fail_after_chunks = None
    with httpx.stream("POST", chat_url(up), json=body) as resp:
        assert sse_events(resp)[-1] == "[DONE]"


def test_require_api_key(up, sdk):
    up.require_api_key = "sk-right"
    body = {"model": "m", "messages": USER}
    assert httpx.post(chat_url(up), json=body).status_code == 401
    wrong = httpx.post(chat_url(up), json=body, headers={"authorization": "Bearer sk-wrong"})
    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(f"{up.base_url}/models").status_code == 401
    with pytest.raises(openai.AuthenticationError):
        sdk(api_key="sk-wrong").chat.completions.create(model="m", messages=USER)

    reply = sdk(api_key="sk-right").chat.completions.create(model="m", messages=USER)
    assert reply.choices[0].message.content == "fake:m:hello there"


def test_client_disconnect_mid_stream_is_counted(up):
    up.configure(stream_chunks=20, chunk_delay_ms=100)
    body = {"model": "m", "messages": USER, "stream": True}
    with httpx.Client() as client:
        with client.stream("POST", chat_url(up), json=body) as resp:
            lines = resp.iter_lines()  # keep it: a dropped iterator closes the response
            assert next(lines).startswith("data: ")
            assert next(lines) == ""
            assert next(lines).startswith("data: ")  # the second chunk, 100 ms later
            assert up.disconnects == 0
        # leaving the block mid-body closes the connection
    started = time.monotonic()
    assert up.wait_for_disconnects(1, timeout=2)
    assert time.monotonic() - started < 1
    assert up.disconnects == 1


def test_complete_and_keep_alive_requests_are_not_disconnects(up):
    body = {"model": "m", "messages": USER}
    with httpx.Client() as client:
        ports = set()
        for stream in (False, True, False):
            resp = client.post(chat_url(up), json={**body, "stream": stream})
            assert resp.status_code == 200
            ports.add(resp.extensions["network_stream"].get_extra_info("client_addr")[1])
    assert len(ports) == 1  # one kept-alive connection served all three
    assert not up.wait_for_disconnects(1, timeout=0.3)


def test_latency_delays_the_response(up):
    body = {"model": "m", "messages": USER}
    with httpx.Client() as client:
        client.get(f"{up.base_url}/models")  # connect first
        up.latency_ms = 400
        started = time.monotonic()
        resp = client.post(chat_url(up), json=body)
        slow = time.monotonic() - started
    # A lower bound only: the delay is a sleep, while an upper bound on a loaded machine is not.
    assert resp.json()["choices"][0]["message"]["content"] == "fake:m:hello there"
    assert slow >= 0.4


def test_client_leaving_during_latency_is_a_disconnect(up):
    up.latency_ms = 2000
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(chat_url(up), json={"model": "m"}, timeout=0.2)
    assert up.wait_for_disconnects(1, timeout=1)


def test_reset_restores_constructor_knobs_and_clears_records():
    with FakeUpstream(stream_chunks=2, require_api_key="k") as up:
        up.configure(stream_chunks=5, hang=True, error_status=500)
        up.latency_ms = 10
        up.hang = False
        httpx.post(chat_url(up), json={"model": "m"}, headers={"authorization": "Bearer k"})
        assert len(up.requests) == 1
        up.reset()
        assert up.requests == []
        assert up.disconnects == 0
        assert (up.stream_chunks, up.require_api_key, up.error_status) == (2, "k", None)
        assert (up.latency_ms, up.hang) == (0, False)
        with pytest.raises(TypeError, match="latancy_ms"):
            up.configure(latancy_ms=5)


def test_bad_requests_get_openai_errors(up):
    missing = httpx.get(f"{up.base_url}/nope")
    assert missing.status_code == 404
    assert set(missing.json()["error"]) == {"message", "type", "param", "code"}
    assert httpx.get(chat_url(up)).status_code == 405
    garbage = httpx.post(chat_url(up), content=b"{not json", headers={"content-type": "x"})
    assert garbage.status_code == 400
    assert "model" in garbage.json()["error"]["message"]
    assert up.requests[-1].body is None
    empty = httpx.post(f"{up.base_url}/embeddings", json={"model": "e", "input": []})
    assert empty.status_code == 400


async def test_async_sdk_streams_from_an_event_loop(up):
    up.configure(stream_chunks=5, chunk_delay_ms=20)
    async with openai.AsyncOpenAI(base_url=up.base_url, api_key="k", max_retries=0) as client:
        stream = await client.chat.completions.create(model="a", messages=USER, stream=True)
        pieces = [c.choices[0].delta.content async for c in stream if c.choices]
    assert pieces[:5] and all(pieces[:5])
    assert "".join(p or "" for p in pieces) == "fake:a:hello there"
    assert up.disconnects == 0


WEATHER = [{"name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'}]


def test_tool_calls_knob_answers_with_tool_calls(up, sdk):
    up.tool_calls = [*WEATHER, {"name": "get_time", "arguments": "{}", "id": "call_t"}]
    answer = sdk().chat.completions.create(model="small", messages=USER)
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    calls = choice.message.tool_calls
    assert [(c.type, c.function.name, c.function.arguments) for c in calls] == [
        ("function", "get_weather", '{"city": "Paris", "unit": "celsius"}'),
        ("function", "get_time", "{}"),
    ]
    assert calls[0].id.startswith("call_") and calls[1].id == "call_t"
    assert len({c.id for c in calls}) == 2


def test_tool_calls_knob_streams_fragments_after_the_text(up, sdk):
    up.configure(tool_calls=WEATHER * 2, reply="Checking.", stream_chunks=3)
    chunks = list(sdk().chat.completions.create(model="small", messages=USER, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    fragments = [f for c in chunks for f in (c.choices[0].delta.tool_calls or [])]
    assert text == "Checking."
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    calls: dict[int, dict[str, str]] = {}
    for f in fragments:
        call = calls.setdefault(f.index, {"id": "", "name": "", "arguments": ""})
        call["id"] += f.id or ""
        call["name"] += (f.function.name or "") if f.function else ""
        call["arguments"] += (f.function.arguments or "") if f.function else ""
    assert sorted(calls) == [0, 1] and calls[0]["id"] != calls[1]["id"]
    assert all(c["name"] == "get_weather" for c in calls.values())
    assert all(c["arguments"] == WEATHER[0]["arguments"] for c in calls.values())
    # The arguments come in several pieces, the name once (in each call's first fragment).
    assert len([f for f in fragments if f.index == 0]) == 1 + 3
    assert [f.index for f in fragments] == sorted(f.index for f in fragments)


def test_tool_calls_knob_may_be_a_function_of_the_request(up, sdk):
    up.tool_calls = lambda body: None if body["messages"][-1]["role"] == "tool" else WEATHER
    first = sdk().chat.completions.create(model="small", messages=USER)
    call = first.choices[0].message.tool_calls[0]
    follow = [
        *USER,
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "22C"},
    ]
    second = sdk().chat.completions.create(model="small", messages=follow)
    assert second.choices[0].message.tool_calls is None
    assert second.choices[0].finish_reason == "stop"


def test_a_malformed_tool_calls_knob_is_a_500(up):
    up.tool_calls = [{"name": "f"}]
    response = httpx.post(chat_url(up), json={"model": "small", "messages": USER})
    assert response.status_code == 500 and "arguments" in response.json()["error"]["message"]


def test_remember_keeps_only_the_latest_requests():
    with FakeUpstream(remember=2) as few, FakeUpstream(remember=0) as none:
        for n in range(3):
            for upstream in (few, none):
                body = {"model": "m", "messages": [{"role": "user", "content": f"hi {n}"}]}
                assert httpx.post(chat_url(upstream), json=body).status_code == 200
        assert [r.body["messages"][0]["content"] for r in few.requests] == ["hi 1", "hi 2"]
        assert none.requests == []
