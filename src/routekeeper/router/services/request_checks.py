"""Checks of a request body's fields shared by the Responses request and its tool fields:
each failure is a 400 (``InvalidRequest``) whose message and ``param`` name the field, as
OpenAI's do (``input[0].content[1].image_url``, ``tools[2].name``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from routekeeper.contract.errors import InvalidRequest
from routekeeper.contract.strict_json import json_kind


def fail(param: str, message: str) -> InvalidRequest:
    return InvalidRequest(f"{param}: {message}", param=param)


def refused(param: str, why: str) -> InvalidRequest:
    """A field routekeeper does not support (code ``unsupported_parameter``)."""
    return InvalidRequest(
        f"{param}: not supported by routekeeper ({why})", param=param, code="unsupported_parameter"
    )


def string(value: Any, param: str, *, max_len: int | None = None) -> str:
    if not isinstance(value, str):
        raise fail(param, f"must be a string, got {json_kind(value)}")
    if max_len is not None and len(value) > max_len:
        raise fail(param, f"must be at most {max_len} characters, got {len(value)}")
    return value


def an_object(value: Any, param: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise fail(param, f"must be an object, got {json_kind(value)}")
    return value
