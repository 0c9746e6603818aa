"""The HTTP/1.1 protocol uvicorn serves with: httptools (llhttp, a C parser) when it is
installed, else h11."""

from __future__ import annotations

import asyncio
import importlib.util
from typing import Any


def http_protocol() -> type[asyncio.Protocol] | str:
    """uvicorn's ``http`` setting: the httptools protocol below, or ``"h11"``."""
    if importlib.util.find_spec("httptools") is None:
        return "h11"
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class HeaderValuesToTheApp(HttpToolsProtocol):
        """llhttp refuses a control character in a header value before the app sees the
        request, with a bare text 400; h11 hands such values on, and the app answers with its
        own envelope naming the header (``x-session-id``). This keeps that: header values are
        not checked by the parser (framing stays strict: Content-Length, Transfer-Encoding,
        chunks and line endings are parsed as before)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.parser.set_dangerous_leniencies(lenient_headers=True)

    return HeaderValuesToTheApp


def parser_name(protocol: type[asyncio.Protocol] | str) -> str:
    return protocol if isinstance(protocol, str) else "httptools"
