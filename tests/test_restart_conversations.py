"""Kill-and-restart tests of conversations and their items, on SQLite and PostgreSQL, through
the real server and the official SDK: every acknowledged conversation and item is there, and a
conversation never holds part of a turn."""

import threading

import httpx
import openai
import pytest

from routekeeper.testing import FakeUpstream

pytestmark = pytest.mark.slow

ECHO = {
    "models": [{"name": "scribe", "backend": {"type": "echo", "reply": "transcript"}}],
    "decisions": [{"name": "default", "model": "scribe"}],
}
# Its reply has the same size at every turn (a transcript of transcripts doubles each turn).
PLAIN = {
    "models": [{"name": "plain", "backend": {"type": "echo"}}],
    "decisions": [{"name": "default", "model": "plain"}],
}


def _sdk(server):
    return openai.OpenAI(
        base_url=f"{server.url}/v1",
        api_key="unused",
        _strict_response_validation=True,
        max_retries=0,
    )


def _snapshot(sdk, conversation_id):
    conversation = sdk.conversations.retrieve(conversation_id).model_dump()
    items = sdk.conversations.items.list(conversation_id, order="asc", limit=100)
    return conversation, [i.model_dump() for i in items]


@pytest.mark.restart(surface="conversations")
@pytest.mark.restart(surface="conversation_items")
def test_sigkill_keeps_every_acknowledged_conversation_and_item(server_factory):
    first = server_factory(**ECHO).start()
    sdk = _sdk(first)
    ids = []
    for n in range(3):
        conversation = sdk.conversations.create(
            items=[{"role": "user", "content": f"first {n} \u0000 \U0001f600"}] * 20,
            metadata={"n": str(n)},
        )
        ids.append(conversation.id)
        sdk.conversations.items.create(
            conversation.id, items=[{"role": "assistant", "content": f"added {n}"}]
        )
        sdk.responses.create(model="scribe", input=f"turn {n}", conversation=conversation.id)
        with sdk.responses.stream(
            model="scribe", input=f"streamed {n}", conversation=conversation.id
        ) as stream:
            stream.get_final_response()
    sdk.conversations.update(ids[0], metadata={"n": "updated"})
    dropped = sdk.conversations.items.list(ids[1], order="asc").data[3]
    sdk.conversations.items.delete(dropped.id, conversation_id=ids[1])
    gone = sdk.conversations.create(items=[{"role": "user", "content": "gone"}])
    sdk.conversations.delete(gone.id)
    before = {i: _snapshot(sdk, i) for i in ids}
    sdk.close()
    first.kill()

    second = server_factory(**ECHO).start()
    sdk = _sdk(second)
    after = {i: _snapshot(sdk, i) for i in ids}
    assert after == before
    assert before[ids[0]][0]["metadata"] == {"n": "updated"}
    assert [len(items) for _, items in after.values()] == [25, 24, 25]
    assert dropped.id not in {i["id"] for i in after[ids[1]][1]}
    with pytest.raises(openai.NotFoundError):
        sdk.conversations.retrieve(gone.id)
    # A turn after the restart sees the whole conversation and is appended after it.
    follow = sdk.responses.create(model="scribe", input="after", conversation=ids[2])
    assert "user: streamed 2" in follow.output[0].content[0].text
    items = list(sdk.conversations.items.list(ids[2], order="asc", limit=100))
    assert [i.id for i in items[-2:]][1] == follow.output[0].id and len(items) == 27


@pytest.mark.restart(surface="conversations")
@pytest.mark.restart(surface="conversation_items")
def test_turns_racing_at_sigkill_leave_whole_turns_only(server_factory):
    # Several clients keep adding turns to one conversation while the server is killed:
    # after the restart the conversation holds every acknowledged turn, and only whole turns
    # (both inputs and the output, together).
    first = server_factory(**PLAIN).start()
    sdk = _sdk(first)
    conversation = sdk.conversations.create(items=[{"role": "user", "content": "start"}])
    acknowledged: dict[str, str] = {}  # input prefix -> output item id
    enough = threading.Event()
    lock = threading.Lock()

    def client(c: int) -> None:
        mine = _sdk(first)
        for k in range(1000):
            key = f"{c}.{k}"
            try:
                answer = mine.responses.create(
                    model="plain",
                    input=[
                        {"role": "user", "content": f"{key}-a"},
                        {"role": "user", "content": f"{key}-b"},
                    ],
                    conversation=conversation.id,
                )
            except (openai.APIError, httpx.HTTPError):
                return  # the server died under it
            with lock:
                acknowledged[key] = answer.output[0].id
                if len(acknowledged) >= 12:
                    enough.set()

    threads = [threading.Thread(target=client, args=(c,)) for c in range(4)]
    for thread in threads:
        thread.start()
    assert enough.wait(60)
    first.kill()
    for thread in threads:
        thread.join(30)

    second = server_factory(**PLAIN).start()
    items = list(_sdk(second).conversations.items.list(conversation.id, order="asc", limit=100))
    texts = [i.content[0].text for i in items]
    assert texts[0] == "start" and (len(texts) - 1) % 3 == 0, texts
    found = {}
    for group in range(1, len(items), 3):
        a, b, output = items[group : group + 3]
        key = a.content[0].text.removesuffix("-a")
        assert b.content[0].text == f"{key}-b" and output.role == "assistant", texts
        found[key] = output.id
    assert {k: found.get(k) for k in acknowledged} == acknowledged


@pytest.mark.restart(surface="conversations")
@pytest.mark.restart(surface="conversation_items")
def test_a_turn_streaming_at_sigkill_is_not_appended(server_factory):
    with FakeUpstream(models=["m"], chunk_delay_ms=60_000) as upstream:
        config = {
            "models": [
                {
                    "name": "slow",
                    "backend": {"type": "openai", "base_url": upstream.base_url, "model": "m"},
                }
            ],
            "decisions": [{"name": "default", "model": "slow"}],
        }
        first = server_factory(**config).start()
        conversation = _sdk(first).conversations.create(
            items=[{"role": "user", "content": "before"}]
        )
        started = threading.Event()

        def stream() -> None:
            try:
                with httpx.stream(
                    "POST",
                    f"{first.url}/v1/responses",
                    json={
                        "model": "slow",
                        "input": "cut",
                        "stream": True,
                        "conversation": conversation.id,
                    },
                    timeout=60,
                ) as response:
                    for line in response.iter_lines():
                        if "response.in_progress" in line:
                            started.set()
            except httpx.HTTPError:
                pass  # the server dies under it

        client = threading.Thread(target=stream)
        client.start()
        assert started.wait(15)
        first.kill()
        client.join(30)

        second = server_factory(**config).start()
        sdk = _sdk(second)
        items = list(sdk.conversations.items.list(conversation.id, order="asc"))
        assert [i.content[0].text for i in items] == ["before"]
