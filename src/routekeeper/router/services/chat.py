"""The chat-completions service: resolve the model (route an auto name, pass a configured
name through), apply the decision's plugins, forward to the model's transport."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from routekeeper.contract.errors import ModelNotFound
from routekeeper.routing.config import DecisionConfig, ModelConfig
from routekeeper.routing.engine import RoutingEngine, RoutingResult
from routekeeper.routing.request import routing_input
from routekeeper.settings import Settings
from routekeeper.upstream.base import ModelTransport
from routekeeper.upstream.config import EchoModelBackend
from routekeeper.upstream.echo import EchoTransport
from routekeeper.upstream.openai import OpenAITransport, UpstreamPool


@dataclass(frozen=True)
class ChatPlan:
    """Where one request goes and what is sent there."""

    model: ModelConfig
    decision: DecisionConfig | None
    """None for a pass-through request (a configured model asked by name)."""
    routing: RoutingResult | None
    body: dict[str, Any]
    stream: bool
    client_wants_usage: bool


class ChatService:
    def __init__(self, settings: Settings, engine: RoutingEngine, pool: UpstreamPool) -> None:
        self.engine = engine
        self.pool = pool
        self.transports: dict[str, ModelTransport] = {}
        for model in settings.models:
            if isinstance(model.backend, EchoModelBackend):
                self.transports[model.name] = EchoTransport(model.name, model.backend)
            else:
                self.transports[model.name] = OpenAITransport(pool, model.backend)

    def model_names(self) -> list[str]:
        names = list(self.transports)
        if self.engine.routes:
            names += [n for n in sorted(self.engine.auto_model_names) if n not in self.transports]
        return names

    async def plan(self, body: dict[str, Any], headers: Mapping[str, str]) -> ChatPlan:
        """Raises ModelNotFound for a model that is neither configured nor an auto name."""
        requested = body.get("model")
        stream = bool(body.get("stream"))
        options = body.get("stream_options") if isinstance(body.get("stream_options"), dict) else {}
        wants_usage = bool(options.get("include_usage")) if options else False
        routing: RoutingResult | None = None
        decision: DecisionConfig | None = None
        if (
            isinstance(requested, str)
            and requested in self.engine.auto_model_names
            and self.engine.routes
        ):
            routing = await self.engine.route(routing_input(body, headers))
            decision, model = routing.decision, routing.model
        elif isinstance(requested, str) and requested in self.engine.models:
            model = self.engine.models[requested]
        else:
            raise ModelNotFound(
                f"The model '{requested}' does not exist",
                details={"available": self.model_names()},
            )
        upstream = dict(body)
        if decision is not None and decision.plugins.system_prompt is not None:
            upstream["messages"] = _with_system_prompt(
                list(body.get("messages") or []),
                decision.plugins.system_prompt.text,
                decision.plugins.system_prompt.mode,
            )
        if stream:
            # Always ask for usage (for accounting); the client only sees it if it asked.
            upstream["stream_options"] = {**(options or {}), "include_usage": True}
        return ChatPlan(model, decision, routing, upstream, stream, wants_usage)

    def transport(self, plan: ChatPlan) -> ModelTransport:
        return self.transports[plan.model.name]


def _with_system_prompt(messages: list[Any], text: str, mode: str) -> list[Any]:
    system = {"role": "system", "content": text}
    if mode == "replace":
        return [
            system,
            *(m for m in messages if not (isinstance(m, dict) and m.get("role") == "system")),
        ]
    return [system, *messages]
