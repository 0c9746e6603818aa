"""``POST /api/routing/explain``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from routekeeper.contract.errors import InvalidRequest
from routekeeper.dashboard.query import api_router
from routekeeper.http.errors import ensure_json_safe
from routekeeper.routing.engine import RoutingEngine
from routekeeper.routing.explain import explain
from routekeeper.routing.request import prompt_input, routing_input


class ExplainRequest(BaseModel):
    # Unknown fields are refused by the route, which names each one (even one called "" or
    # "body"); the schema still says no other field is taken.
    model_config = ConfigDict(extra="allow", json_schema_extra={"additionalProperties": False})
    prompt: str | None = Field(None, max_length=1_000_000, description="A single user prompt.")
    messages: list[dict[str, Any]] | None = Field(None, min_length=1, max_length=10_000)
    metadata: dict[str, str] | None = None
    user: str | None = None
    headers: dict[str, str] | None = Field(None, description="Request headers to assume.")


def _invalid(param: str, message: str, *, also: str | None = None) -> InvalidRequest:
    problems = [{"param": p, "message": message} for p in (param, also) if p]
    return InvalidRequest(message, details={"problems": problems})


def router(engine: RoutingEngine) -> APIRouter:
    """``POST /api/routing/explain`` over ``engine``."""
    routes = api_router(prefix="/api/routing", tags=["routing"])

    @routes.post("/explain", operation_id="explain_routing")
    async def explain_routing(body: ExplainRequest) -> dict[str, Any]:
        """Which signals match (with scores), which decisions match, which wins and why. No
        model is called."""
        unknown = sorted(body.model_extra or {})
        if unknown:
            shown = ", ".join(f"'{name}'" for name in unknown)
            raise InvalidRequest(
                f"unknown field{'s' if len(unknown) > 1 else ''} {shown} (fields: "
                f"{', '.join(ExplainRequest.model_fields)})",
                details={"problems": [{"param": n, "message": "unknown field"} for n in unknown]},
            )
        for name, value in body.model_dump(exclude=set(unknown)).items():
            try:
                ensure_json_safe(value)
            except InvalidRequest as exc:
                raise _invalid(name, f"{name}: {exc.message}") from None
        if not engine.routes:
            raise InvalidRequest("no decisions are configured, so nothing is routed")
        if (body.prompt is None) == (body.messages is None):
            raise _invalid("prompt", "give exactly one of prompt or messages", also="messages")
        if body.prompt is not None:
            inp = prompt_input(
                body.prompt, metadata=body.metadata, user=body.user, headers=body.headers
            )
        else:
            inp = routing_input(
                {"messages": body.messages, "metadata": body.metadata or {}, "user": body.user},
                body.headers,
            )
        return await explain(engine, inp)

    return routes
