"""What the fake upstream answers to a chat completion: the ``chat.completion`` body, or the
``chat.completion.chunk`` frames of a stream, from the reply text and the tool calls its knobs
chose (see :mod:`routekeeper.testing.fake_upstream`).

A tool call is ``{"name": ..., "arguments": "<JSON text>"}`` (``"id"`` optional; the default
is ``call_<n>_<i>``). A plain answer carries them as ``message.tool_calls``; a stream sends
each call as OpenAI does: a first ``delta.tool_calls`` fragment with ``index``, ``id``,
``type`` and ``function.name`` (arguments ``""``), then its arguments in ``stream_chunks``
pieces, one fragment each (``index`` and ``function.arguments``), calls one after another
(parallel calls are several indexes), after any text."""

from __future__ import annotations

from typing import Any


def _words(text: str) -> int:
    return len(text.split())


def content_text(content: Any) -> str:
    """A message's text: a string, or the text parts of a parts list joined by spaces."""
    if isinstance(content, list):  # content parts
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


def checked_calls(value: Any, number: int) -> list[dict[str, Any]]:
    """The ``tool_calls`` knob's calls as chat tool calls. Raises TypeError (the fake then
    answers 500) for anything but a list of ``{"name", "arguments"[, "id"]}`` strings."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise TypeError(f"tool_calls must be a list, got {value!r}")
    calls = []
    for i, call in enumerate(value):
        if not isinstance(call, dict) or not all(
            isinstance(call.get(k), str) for k in ("name", "arguments")
        ):
            raise TypeError(f"tool_calls[{i}] needs string 'name' and 'arguments': {call!r}")
        calls.append(
            {
                "id": call.get("id") or f"call_{number}_{i}",
                "type": "function",
                "function": {"name": call["name"], "arguments": call["arguments"]},
            }
        )
    return calls


def usage_of(messages: list[dict[str, Any]], text: str, calls: list[dict[str, Any]]) -> dict:
    """Word counts: every message's text in, the reply and the call arguments out."""
    prompt = max(1, sum(_words(content_text(m.get("content"))) for m in messages))
    completion = _words(text) + sum(_words(c["function"]["arguments"]) for c in calls)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def completion(
    base: dict[str, Any],
    text: str | None,
    calls: list[dict[str, Any]],
    finish_reason: str,
    usage: dict[str, Any],
) -> dict[str, Any]:
    """The plain answer: one choice, its message's content and tool calls."""
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
    if calls:
        message["tool_calls"] = calls
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
    return {**base, "object": "chat.completion", "choices": [choice], "usage": usage}


def _pieces(text: str, n: int) -> list[str]:
    return [text[i * len(text) // n : (i + 1) * len(text) // n] for i in range(n)]


def chunk_frames(
    base: dict[str, Any],
    text: str | None,
    calls: list[dict[str, Any]],
    *,
    chunks: int,
    finish_reason: str,
    usage: dict[str, Any] | None,
) -> list[dict[str, Any]]:
    """The stream's frames: text in ``chunks`` content pieces (none when ``text`` is None and
    there are calls), each call's fragments, a ``finish_reason`` frame, then the usage frame
    when ``usage`` is given (``stream_options.include_usage``; every frame has ``usage``
    null then)."""
    n = max(1, chunks)
    deltas: list[dict[str, Any]] = []
    if text is not None or not calls:
        deltas = [{"content": p} for p in _pieces(text or "", n)]
    for i, call in enumerate(calls):
        head = {**call, "index": i, "function": {**call["function"], "arguments": ""}}
        deltas.append({"tool_calls": [head]})
        deltas += [
            {"tool_calls": [{"index": i, "function": {"arguments": p}}]}
            for p in _pieces(call["function"]["arguments"], n)
        ]
    deltas = [{"role": "assistant", **deltas[0]}, *deltas[1:], {}]  # {}: the finish frame
    chunk: dict[str, Any] = {**base, "object": "chat.completion.chunk"}
    frames = []
    for d in deltas:
        choice = {"index": 0, "delta": d, "logprobs": None, "finish_reason": None}
        frames.append({**chunk, "choices": [choice]})
    frames[-1]["choices"][0]["finish_reason"] = finish_reason
    if usage is not None:
        frames = [{**f, "usage": None} for f in frames]
        frames.append({**chunk, "choices": [], "usage": usage})
    return frames
