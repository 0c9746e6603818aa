"""The registry of state surfaces: every piece of state routekeeper keeps, declared once, in
registry order. Each surface is declared next to its records (``contract/<family>.py``); only
surfaces that exist in the code are registered. ``docs/state-inventory.md`` and
``routekeeper state inventory`` are generated from this list."""

from __future__ import annotations

from routekeeper.contract.auth import API_KEYS, AUDIT_EVENTS
from routekeeper.contract.conversations import CONVERSATION_ITEMS, CONVERSATIONS
from routekeeper.contract.evaluation import EVALUATION_RESULTS
from routekeeper.contract.jobs import JOB_EVENTS, JOBS
from routekeeper.contract.replay import ROUTER_REPLAY
from routekeeper.contract.responses import RESPONSE_ITEMS, RESPONSES
from routekeeper.contract.runtime import RUNTIME_EVENTS, RUNTIME_STATUS
from routekeeper.contract.surface import SurfaceRegistry

SURFACES = SurfaceRegistry(
    (
        RUNTIME_STATUS,
        RUNTIME_EVENTS,
        ROUTER_REPLAY,
        RESPONSES,
        RESPONSE_ITEMS,
        CONVERSATIONS,
        CONVERSATION_ITEMS,
        API_KEYS,
        AUDIT_EVENTS,
        JOBS,
        JOB_EVENTS,
        EVALUATION_RESULTS,
    )
)
