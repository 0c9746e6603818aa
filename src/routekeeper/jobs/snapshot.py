"""The routing configuration a job is pinned to: what it was submitted under, stored with the
job with its hash, so a resumed attempt routes exactly as the first one did even when the
server restarted with another configuration."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from routekeeper.routing.config import (
    DecisionConfig,
    EmbedderConfig,
    ModelConfig,
    SignalsConfig,
)
from routekeeper.settings import Settings

ROUTING_FIELDS = ("models", "signals", "decisions", "auto_model_names", "embedder")


def routing_snapshot(settings: Settings) -> dict[str, Any]:
    """The routing part of ``settings`` as JSON values (backends name their keys' variables,
    never the keys)."""
    return settings.model_dump(mode="json", include=set(ROUTING_FIELDS))


def routing_hash(snapshot: dict[str, Any]) -> str:
    encoded = json.dumps(snapshot, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(encoded.encode()).hexdigest()


def settings_for(settings: Settings, snapshot: dict[str, Any]) -> Settings:
    """``settings`` with the routing part of ``snapshot`` (the rest, storage included, is
    this process's own)."""
    return settings.model_copy(
        update={
            "models": [ModelConfig.model_validate(m) for m in snapshot["models"]],
            "signals": SignalsConfig.model_validate(snapshot["signals"]),
            "decisions": [DecisionConfig.model_validate(d) for d in snapshot["decisions"]],
            "auto_model_names": list(snapshot["auto_model_names"]),
            "embedder": EmbedderConfig.model_validate(snapshot["embedder"]),
        }
    )
