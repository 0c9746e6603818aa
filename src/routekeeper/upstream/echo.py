"""The built-in ``echo`` backend: deterministic, local, streaming too. Its reply starts with
``echo:<model name>`` so a new user sees which model routing chose without any LLM server;
``reply: transcript`` answers with every message it received (role and text, in order; tool
calls and tool results too)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from routekeeper.contract.ids import new_id
from routekeeper.upstream.config import EchoModelBackend
from routekeeper.upstream.messages import all_text, estimate_tokens, last_user_text, transcript


class EchoTransport:
    def __init__(self, model_name: str, backend: EchoModelBackend) -> None:
        self.model_name = model_name
        self.backend = backend

    def _reply(self, body: dict[str, Any]) -> tuple[str, dict[str, int]]:
        if self.backend.reply == "transcript":
            text = f"echo:{self.model_name}:\n{transcript(body)}"
        else:
            text = f"echo:{self.model_name}: {last_user_text(body)}"
        prompt, completion = estimate_tokens(all_text(body)), estimate_tokens(text)
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        return text, usage

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        text, usage = self._reply(body)
        return {
            "id": new_id("chatcmpl"),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model_name,
            "system_fingerprint": None,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": usage,
        }

    @asynccontextmanager
    async def stream(self, body: dict[str, Any]) -> AsyncIterator[AsyncIterator[str]]:
        yield self._chunks(body)

    async def _chunks(self, body: dict[str, Any]) -> AsyncIterator[str]:
        text, usage = self._reply(body)
        cid, created = new_id("chatcmpl"), int(time.time())
        n = self.backend.chunks
        size = max(1, -(-len(text) // n))
        pieces = [text[i : i + size] for i in range(0, len(text), size)] or [""]
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict[str, Any], finish: str | None) -> str:
            data: dict[str, Any] = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": self.model_name,
                "choices": [
                    {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
                ],
            }
            if include_usage:
                data["usage"] = None
            return json.dumps(data)

        yield chunk({"role": "assistant", "content": ""}, None)
        for piece in pieces:
            yield chunk({"content": piece}, None)
        yield chunk({}, "stop")
        if include_usage:
            yield json.dumps(
                {
                    "id": cid,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": self.model_name,
                    "choices": [],
                    "usage": usage,
                }
            )

    async def aclose(self) -> None:
        return None
