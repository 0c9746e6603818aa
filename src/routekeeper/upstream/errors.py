"""Upstream failures, translated at the edge into one exception with a kind."""

from __future__ import annotations

import enum
from typing import Any


class UpstreamErrorKind(enum.StrEnum):
    HTTP = "http"
    """The upstream answered with a 4xx/5xx."""
    TIMEOUT = "timeout"
    CONNECT = "connect"
    """It could not be reached (refused, DNS, TLS)."""
    PROTOCOL = "protocol"
    """It answered with something that is not OpenAI-shaped, or dropped the connection."""


class UpstreamError(Exception):
    def __init__(
        self,
        kind: UpstreamErrorKind,
        message: str,
        *,
        status: int | None = None,
        body: Any = None,
        retry_after: str | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.body = body
        self.retry_after = retry_after

    def upstream_field(self, name: str) -> str | None:
        """``code`` or ``param`` from the upstream's OpenAI error envelope, if it sent one."""
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            value = self.body["error"].get(name)
            return value if isinstance(value, str) else None
        return None

    def upstream_message(self) -> str:
        """The upstream's own error message when it sent an OpenAI envelope."""
        if isinstance(self.body, dict):
            error = self.body.get("error")
            if isinstance(error, dict) and isinstance(error.get("message"), str):
                return str(error["message"])
        return self.message
