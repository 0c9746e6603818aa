"""Who may call each route. The app's route list (``server.app.include_routes``) gives every
router exactly one :class:`Guard` (``open``, ``member`` or ``admin``); the guard checks the
request's key before the route runs and keeps the principal on the request, where routes
read it with :data:`Caller`. ``document_access`` shows each operation's access in
/openapi.json (``x-routekeeper-access`` and its ``security``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, routing
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from routekeeper.contract.auth import Access, Principal

Check = Callable[[Request, Access], Awaitable[Principal]]
"""Checks a request for an access level: the principal, or the contract's 401/403/429/503."""

GUARD_ATTRIBUTE = "routekeeper_guard"
"""Where a plain route's endpoint keeps the guard it calls itself (see :func:`guarded`)."""
PRINCIPAL = "routekeeper.principal"
RATE_HEADERS = "routekeeper.rate_limit_headers"
"""Where a guard leaves the principal and the rate-limit headers (the request scope)."""


class Guard:
    """A router-level dependency that admits requests with ``access``."""

    def __init__(self, access: Access, check: Check) -> None:
        self.access = access
        self.check = check

    async def __call__(self, request: Request) -> None:
        await self.admit(request)

    async def admit(self, request: Request) -> Principal:
        """Check ``request`` (also called by the plain hot-path routes, which no dependency
        reaches) and keep its principal."""
        principal = await self.check(request, self.access)
        request.scope[PRINCIPAL] = principal
        return principal


def caller(request: Request) -> Principal:
    """The principal the route's guard admitted."""
    principal = request.scope.get(PRINCIPAL)
    if not isinstance(principal, Principal):
        raise RuntimeError(f"{request.url.path} has no access guard")
    return principal


Caller = Annotated[Principal, Depends(caller)]


def guarded(endpoint: Callable[[Request], Awaitable[Any]], guard: Guard) -> None:
    """Declare the guard a plain route's ``endpoint`` calls itself (no dependency reaches a
    plain route), so :func:`route_access` reads it like a router's."""
    setattr(endpoint, GUARD_ATTRIBUTE, guard)


def app_routes(app: FastAPI) -> Iterator[Any]:
    """Every route of ``app`` as it serves it, the routes of included routers with their
    router's dependencies (FastAPI versions that keep included routers whole list them
    through ``iter_route_contexts``; older ones copy them into ``app.routes``)."""
    contexts = getattr(routing, "iter_route_contexts", None)
    yield from contexts(app.routes) if contexts is not None else app.routes


def route_access(route: Any) -> list[Access]:
    """The access levels ``route`` (a route of :func:`app_routes`) declares, exactly one on
    every route: its guards as dependencies (an API route, with its router's) or the guard
    its endpoint calls itself (a plain route)."""
    original = getattr(route, "original_route", route)
    if isinstance(original, APIRoute):
        return [d.dependency.access for d in route.dependencies if isinstance(d.dependency, Guard)]
    if isinstance(original, Route):
        guard = getattr(original.endpoint, GUARD_ATTRIBUTE, None)
        return [guard.access] if isinstance(guard, Guard) else []
    return []


def document_access(app: FastAPI) -> None:
    """Make /openapi.json show each operation's access: ``x-routekeeper-access`` and, for
    ``member`` and ``admin``, the bearer key as its ``security``."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, routes=app.routes, description=app.description
        )
        schema.setdefault("components", {})["securitySchemes"] = {
            "apiKey": {
                "type": "http",
                "scheme": "bearer",
                "description": "A routekeeper API key (rk_...); only with auth.mode: api_key.",
            }
        }
        for route in app_routes(app):
            if not isinstance(getattr(route, "original_route", route), APIRoute):
                continue
            if not route.include_in_schema:
                continue
            levels = route_access(route)
            for method in route.methods or ():
                operation = schema["paths"].get(route.path_format, {}).get(method.lower())
                if operation is None or len(levels) != 1:
                    continue
                operation["x-routekeeper-access"] = levels[0].value
                if levels[0] is not Access.OPEN:
                    operation["security"] = [{"apiKey": []}]
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


class RateLimitHeaders:
    """Adds the ``x-ratelimit-*`` headers a guard computed to the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = scope.get(RATE_HEADERS)
                if extra:
                    headers = list(message.get("headers", []))
                    headers += [(k.encode(), v.encode()) for k, v in extra.items()]
                    message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def key_check(
    authenticate: Callable[[str | None, Access], Awaitable[Principal]],
    limit: Callable[[Principal], Awaitable[dict[str, str] | None]],
) -> Check:
    """The check every guard of an app runs: the key (``Authorization``), then its rate
    limit (the ``x-ratelimit-*`` headers go on the answer; past the limit, a 429)."""

    async def check(request: Request, access: Access) -> Principal:
        principal = await authenticate(request.headers.get("authorization"), access)
        if principal.requests_per_minute is not None:
            headers = await limit(principal)
            if headers:
                request.scope[RATE_HEADERS] = headers
        return principal

    return check
