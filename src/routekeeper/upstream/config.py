"""What an upstream model backend is configured with (the ``backend`` of each entry of
``models``): an OpenAI-compatible server, or the built-in echo."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from routekeeper.sections.base import Section


class OpenAIModelBackend(Section):
    """An OpenAI-compatible server (vLLM, llama.cpp, OpenAI, ...)."""

    type: Literal["openai"] = Field(
        "openai", description="`openai` selects an OpenAI-compatible server."
    )
    base_url: str = Field(description="Up to and including /v1, e.g. http://127.0.0.1:9000/v1")
    model: str = Field(description="The model name the upstream expects.")
    api_key_env: str | None = Field(None, description="Environment variable holding the key.")
    timeout_seconds: float = Field(
        120.0,
        gt=0,
        le=3600,
        description=(
            "Longest wait: for the whole answer of a non-streaming request; for a stream, "
            "for its first chunk and between chunks."
        ),
    )
    connect_timeout_seconds: float = Field(
        5.0, gt=0, le=300, description="Longest wait to open a connection to the server."
    )

    @field_validator("base_url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")


class EchoModelBackend(Section):
    """Built in, deterministic, no network: replies ``echo:<model name>: <last user text>``,
    or with ``reply: transcript`` every message it received."""

    type: Literal["echo"] = Field(
        "echo", description="`echo` selects the built-in echo backend (no network)."
    )
    chunks: int = Field(4, ge=1, le=1000, description="Stream chunks per reply.")
    reply: Literal["last_user_message", "transcript"] = Field(
        "last_user_message",
        description="`last_user_message`: `echo:<model>: <last user text>`. `transcript`: "
        "`echo:<model>:` then one line per message received, `<role>: <text>` in order (an "
        "image part shows as `[image]`, an assistant's tool call as `[tool_call <id> <name> "
        "<arguments>]`, a tool message starts with `[<tool_call_id>]`), so a client sees the "
        "context the model got.",
    )
