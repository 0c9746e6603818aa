"""Strict query strings for every ``/api`` endpoint.

FastAPI reads the query parameters a route declares and ignores every other one, and takes
the last of a repeated scalar parameter. On a management API both hide mistakes: a misspelt
filter (``lifecyle_state=failed``) silently returns everything. ``strict_query`` is a
router-level dependency of every dashboard router (``api_router``): it derives what the
matched route accepts from the route's own declared parameters (its sub-dependencies
included), and refuses anything else with a 400 naming the parameters.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator
from enum import Enum
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from routekeeper.contract.auth import TENANT_PATTERN
from routekeeper.contract.errors import InvalidRequest

_SEQUENCES = (list, set, frozenset, tuple)

TenantParam = typing.Annotated[
    str | None,
    Query(pattern=TENANT_PATTERN, description="Only this tenant's rows (default: every tenant)."),
]
"""The ``tenant=`` filter of ``/api`` lists and aggregates (admin keys see every tenant)."""


def _takes_many(annotation: Any) -> bool:
    """Whether a query parameter's type collects every value (``list[X]``, ``X | None``
    around one)."""
    origin = typing.get_origin(annotation)
    if origin in _SEQUENCES or annotation in _SEQUENCES:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_takes_many(arg) for arg in typing.get_args(annotation))
    if origin is typing.Annotated:
        return _takes_many(typing.get_args(annotation)[0])
    return False


def _query_params(dependant: Dependant) -> Iterator[tuple[str, bool]]:
    for param in dependant.query_params:
        yield param.alias, _takes_many(param.field_info.annotation)
    for sub in dependant.dependencies:
        yield from _query_params(sub)


def declared_query(route: APIRoute) -> dict[str, bool]:
    """The query parameters ``route`` declares: name -> whether it may repeat."""
    return dict(_query_params(route.dependant))


def strict_query(request: Request) -> None:
    """Refuse (400) query parameters the matched route does not declare, and a repeated
    parameter that takes one value. The error names every offending parameter."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    declared = declared_query(route)
    names = [name for name, _ in request.query_params.multi_items()]
    unknown = sorted({n for n in names if n not in declared})
    repeated = sorted(
        {n for n in names if n in declared and not declared[n] and names.count(n) > 1}
    )
    if not unknown and not repeated:
        return
    problems = [{"param": n, "message": "unknown query parameter"} for n in unknown] + [
        {"param": n, "message": "given more than once; it takes one value"} for n in repeated
    ]
    parts = []
    if unknown:
        accepted = ", ".join(sorted(declared)) or "none"
        parts.append(
            f"unknown query parameter{'s' if len(unknown) > 1 else ''} {_names(unknown)} "
            f"({request.url.path} accepts: {accepted})"
        )
    if repeated:
        parts.append(
            f"query parameter{'s' if len(repeated) > 1 else ''} {_names(repeated)} "
            "given more than once (each takes one value)"
        )
    raise InvalidRequest("; ".join(parts), details={"problems": problems})


def _names(names: list[str]) -> str:
    return ", ".join(f"'{n}'" for n in names)


def api_router(*, prefix: str, tags: list[str | Enum]) -> APIRouter:
    """A dashboard router: every route on it refuses unknown and repeated query parameters."""
    return APIRouter(prefix=prefix, tags=tags, dependencies=[Depends(strict_query)])
