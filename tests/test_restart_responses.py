"""Kill-and-restart tests of responses and their items, on SQLite and PostgreSQL, through the
real server and the official SDK."""

import threading
import time

import httpx
import openai
import pytest

from routekeeper.testing import FakeUpstream

pytestmark = pytest.mark.slow

FAST_SWEEP = {"heartbeat_seconds": 0.5, "stale_after_seconds": 3.0}
ECHO = {
    "models": [{"name": "scribe", "backend": {"type": "echo", "reply": "transcript"}}],
    "decisions": [{"name": "default", "model": "scribe"}],
}


def _sdk(server):
    return openai.OpenAI(
        base_url=f"{server.url}/v1",
        api_key="unused",
        _strict_response_validation=True,
        max_retries=0,
    )


def _snapshot(sdk, response_id):
    response = sdk.responses.retrieve(response_id).model_dump()
    items = [i.model_dump() for i in sdk.responses.input_items.list(response_id, limit=100)]
    return response, items


@pytest.mark.restart(surface="responses")
@pytest.mark.restart(surface="response_items")
def test_sigkill_keeps_every_acknowledged_response_and_its_items(server_factory):
    first = server_factory(**ECHO).start()
    sdk = _sdk(first)
    ids, previous = [], None
    for turn in range(6):
        created = sdk.responses.create(
            model="scribe",
            input=[{"role": "user", "content": f"turn {turn} \u0000 \U0001f600"}],
            previous_response_id=previous,
            metadata={"turn": str(turn)},
        )
        ids.append(previous := created.id)
    with sdk.responses.stream(model="scribe", input="streamed", previous_response_id=previous) as s:
        ids.append(s.get_final_response().id)
    many = sdk.responses.create(
        model="scribe", input=[{"role": "user", "content": str(i)} for i in range(120)]
    )
    ids.append(many.id)
    before = {i: _snapshot(sdk, i) for i in ids}
    sdk.close()
    first.kill()

    second = server_factory(**ECHO).start()
    sdk = _sdk(second)
    after = {i: _snapshot(sdk, i) for i in ids}
    assert after == before
    assert len(after[many.id][1]) == 120 and before[ids[-2]][0]["status"] == "completed"
    # The chain still builds the whole context after the restart.
    follow = sdk.responses.create(model="scribe", input="after", previous_response_id=ids[-2])
    text = follow.output[0].content[0].text
    sdk.close()
    assert all(f"turn {t} \u0000" in text for t in range(6)) and "user: streamed" in text


@pytest.mark.restart(surface="responses")
@pytest.mark.restart(surface="response_items")
def test_a_response_streaming_at_sigkill_is_failed_with_the_restart_error(server_factory):
    with FakeUpstream(models=["m"], chunk_delay_ms=60_000) as upstream:
        config = {
            "models": [
                {
                    "name": "slow",
                    "backend": {"type": "openai", "base_url": upstream.base_url, "model": "m"},
                }
            ],
            "decisions": [{"name": "default", "model": "slow"}],
            "runtime": FAST_SWEEP,
        }
        first = server_factory(**config).start()
        seen: list[str] = []
        started = threading.Event()

        def stream() -> None:
            try:
                with httpx.stream(
                    "POST",
                    f"{first.url}/v1/responses",
                    json={"model": "slow", "input": "tell me", "stream": True},
                    timeout=60,
                ) as response:
                    for line in response.iter_lines():
                        seen.append(line)
                        if line.startswith("data: ") and "response.in_progress" in line:
                            started.set()  # sent after the in_progress row's commit
            except httpx.HTTPError:
                pass  # the server dies under it

        client = threading.Thread(target=stream)
        client.start()
        assert started.wait(15), seen
        first.kill()
        client.join(30)
        created = next(line for line in seen if '"response.created"' in line)
        response_id = created.split('"id":"', 1)[1].split('"', 1)[0]

        second = server_factory(**config).start()
        # SQLite: failed before ready (the flock is proof). PostgreSQL: once the new
        # replica's sweep records the crash, within stale + heartbeat of its start.
        deadline = time.monotonic() + FAST_SWEEP["stale_after_seconds"] + 3
        while (stored := _sdk(second).responses.retrieve(response_id)).status == "in_progress":
            assert time.monotonic() < deadline, second.log_tail()
            time.sleep(0.2)
        assert stored.status == "failed"
        assert stored.error.code == "server_error" and "restarted" in stored.error.message
        items = list(_sdk(second).responses.input_items.list(response_id))
        assert [i.content[0].text for i in items] == ["tell me"]
