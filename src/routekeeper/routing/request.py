"""What routing looks at in a chat request, extracted once per request."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from routekeeper.upstream.messages import all_text, last_user_text


@dataclass(frozen=True)
class RoutingInput:
    text: str
    """The last user message's text: what keyword, regex and embedding signals read."""
    messages: Sequence[Any] = field(default=(), repr=False, compare=False)
    """The request's messages (a long conversation's too), read only for :attr:`all_text`."""
    metadata: Mapping[str, str] = field(default_factory=dict)
    user: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    """Lower-cased header names."""

    @cached_property
    def all_text(self) -> str:
        """Every message's text, for context length: joined on first use (only a
        ``context_length`` signal, or explain, reads it)."""
        return all_text({"messages": self.messages})


def routing_input(
    body: Mapping[str, Any], headers: Mapping[str, str] | None = None
) -> RoutingInput:
    metadata = body.get("metadata") or {}
    user = body.get("user")
    messages = body.get("messages")
    return RoutingInput(
        text=last_user_text(body),
        messages=messages if isinstance(messages, list) else (),
        metadata={str(k): str(v) for k, v in metadata.items()}
        if isinstance(metadata, dict)
        else {},
        user=user if isinstance(user, str) else None,
        headers={k.lower(): v for k, v in (headers or {}).items()},
    )


def prompt_input(
    prompt: str,
    *,
    metadata: Mapping[str, str] | None = None,
    user: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> RoutingInput:
    """A single user prompt as routing input (for explain)."""
    return routing_input(
        {
            "messages": [{"role": "user", "content": prompt}],
            "metadata": dict(metadata or {}),
            "user": user,
        },
        headers,
    )
