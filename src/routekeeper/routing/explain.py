"""Why a prompt routes where it does, without calling any model."""

from __future__ import annotations

from typing import Any

from routekeeper.routing.engine import RoutingEngine
from routekeeper.routing.request import RoutingInput


async def explain(engine: RoutingEngine, inp: RoutingInput) -> dict[str, Any]:
    result = await engine.route(inp, count_tokens=True)
    return {
        "decision": result.decision.name,
        "model": result.model.name,
        "reason": result.reason,
        "tokens": result.tokens,
        "signals": [
            {
                "ref": s.ref,
                "family": s.family,
                "name": s.name,
                "matched": s.matched,
                "score": s.score,
                "detail": s.detail,
            }
            for s in result.signals
        ],
        "decisions": [
            {
                "name": d.name,
                "priority": d.priority,
                "matched": d.matched,
                "default": d.default,
                "selected": d.name == result.decision.name,
            }
            for d in result.decisions
        ],
    }
