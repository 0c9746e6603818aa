"""Upstream failures, translated at the edge into one exception with a kind. It is part of
the error tree: each failure carries the HTTP status and code a client gets for it."""

from __future__ import annotations

import enum
from typing import Any

from routekeeper.contract.errors import RoutekeeperError


class UpstreamErrorKind(enum.StrEnum):
    HTTP = "http"
    """The upstream answered with a 4xx/5xx."""
    TIMEOUT = "timeout"
    CONNECT = "connect"
    """It could not be reached (refused, DNS, TLS)."""
    PROTOCOL = "protocol"
    """It answered with something that is not OpenAI-shaped, or dropped the connection."""


# The code of a failure that is not the upstream's own 4xx/5xx (also the in-band code of a
# stream that breaks after its first byte).
KIND_CODES = {
    UpstreamErrorKind.HTTP: "upstream_error",
    UpstreamErrorKind.TIMEOUT: "upstream_timeout",
    UpstreamErrorKind.CONNECT: "upstream_unreachable",
    UpstreamErrorKind.PROTOCOL: "upstream_protocol_error",
}


class UpstreamError(RoutekeeperError):
    """What a client gets: an upstream 4xx/5xx keeps its status, code and param, except
    401/403 (routekeeper's credentials, not the client's, were refused): 502
    ``upstream_auth_failed``; a 429 keeps its ``retry-after``. Timeouts are 504, unreachable
    or broken upstreams 502."""

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
        self.upstream_status = status
        """The status the upstream answered with (None when it did not answer)."""
        self.body = body
        self.upstream_retry_after = retry_after
        self.code = KIND_CODES[kind]
        self.status = 504 if kind is UpstreamErrorKind.TIMEOUT else 502
        if kind is UpstreamErrorKind.HTTP and status is not None:
            self._from_upstream_answer(status)

    def _from_upstream_answer(self, status: int) -> None:
        self.message = self.upstream_message()
        # The upstream's own code (e.g. context_length_exceeded) and param reach the client.
        self.code = self.upstream_field("code") or "upstream_error"
        self.param = self.upstream_field("param")
        if status in (401, 403):
            self.status, self.code = 502, "upstream_auth_failed"
            self.message = (
                f"the upstream refused routekeeper's credentials ({status}): {self.message}"
            )
        elif 400 <= status <= 599:
            self.status = status
            if status == 429:
                self.code = self.upstream_field("code") or "rate_limited"

    @property
    def in_band_code(self) -> str:
        """The code of this failure in a stream's in-band error event."""
        return KIND_CODES[self.kind]

    def headers(self) -> dict[str, str]:
        if self.status == 429 and self.upstream_retry_after:
            return {"retry-after": self.upstream_retry_after}
        return super().headers()

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
