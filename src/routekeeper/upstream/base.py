"""What every model backend offers the chat service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol


class ModelTransport(Protocol):
    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        """A non-streaming chat completion. Raises UpstreamError."""
        ...

    def stream(self, body: dict[str, Any]) -> AbstractAsyncContextManager[AsyncIterator[str]]:
        """Open a streaming completion: entering raises UpstreamError for a refused request
        (so the client still gets a proper status); the iterator yields each SSE ``data:``
        payload (without ``[DONE]``) and raises UpstreamError when the stream breaks.
        Leaving the context closes the upstream connection (that is how a client disconnect
        cancels the upstream request)."""
        ...

    async def aclose(self) -> None: ...
