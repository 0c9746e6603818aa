"""Request bodies: decoded once, with errors in words a client author understands."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from routekeeper.contract.errors import InvalidRequest
from routekeeper.contract.strict_json import JSONRefused, loads_strict

GZIP_MAGIC = b"\x1f\x8b"


def decode_json_body(raw: bytes, headers: Mapping[str, str]) -> Any:
    """The JSON value of a request body (any content type: curl's form default included).
    Raises InvalidRequest (``param`` None: the body as a whole is wrong)."""
    encoding = headers.get("content-encoding", "").strip().lower()
    if encoding not in ("", "identity"):
        raise InvalidRequest(
            f"compressed request bodies are not supported (content-encoding: {encoding}); "
            "send the JSON uncompressed",
            code="unsupported_content_encoding",
        )
    if not raw.strip():
        raise InvalidRequest("the request body is empty; send a JSON object")
    if raw.startswith(GZIP_MAGIC):
        raise InvalidRequest(
            "the request body is gzip-compressed data, not JSON; send the JSON uncompressed"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(
            f"the request body is not UTF-8 text (invalid byte at offset {exc.start})"
        ) from None
    try:
        return loads_strict(text)
    except JSONRefused as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from None
