"""The five state classes and the two derived words, *durable* and *shared*.

The class names are part of the public contract: they appear verbatim in configuration,
in ``routekeeper state inventory`` and in ``/api/status``.
"""

from __future__ import annotations

import enum


class StateClass(enum.StrEnum):
    """How a piece of state behaves across requests, restarts and replicas."""

    EPHEMERAL_REQUEST_STATE = "ephemeral_request_state"
    """Per-request or per-connection working state; losing it on restart is fine."""

    RESTART_SAFE_LOCAL_STATE = "restart_safe_local_state"
    """Survives a restart of one node; never shared between replicas."""

    SHARED_DURABLE_WORKFLOW_STATE = "shared_durable_workflow_state"
    """User- or operator-visible entities; authoritative; shared by all replicas."""

    AUDIT_ANALYTICS_TELEMETRY = "audit_analytics_telemetry"
    """Append-only facts with retention by age or count; never parsed from logs."""

    DERIVED_PROJECTION_STATE = "derived_projection_state"
    """A query model rebuilt from a canonical source; persisted, with a rebuild command."""


DURABLE_DEFINITION = (
    "A durable surface is one of any class except ephemeral_request_state: "
    "what it stores survives a restart of the process."
)
SHARED_DEFINITION = (
    "A shared surface is a durable one of any class except restart_safe_local_state: "
    "when several replicas run it must live on the shared backend (PostgreSQL)."
)


def is_durable(state_class: StateClass) -> bool:
    """True for every class except ``ephemeral_request_state``."""
    return state_class is not StateClass.EPHEMERAL_REQUEST_STATE


def is_shared(state_class: StateClass) -> bool:
    """True for durable classes other than ``restart_safe_local_state``."""
    return is_durable(state_class) and state_class is not StateClass.RESTART_SAFE_LOCAL_STATE


class BackendKind(enum.StrEnum):
    """Kinds of storage backend a surface can be configured on."""

    SQLITE = "sqlite"
    POSTGRES = "postgres"
    MEMORY = "memory"


# Which backend kinds each class may live on without an explicit opt-in. A durable surface on
# ``memory`` needs ``state.allow_ephemeral``; in shared mode a shared surface needs PostgreSQL.
ALLOWED_BACKENDS: dict[StateClass, frozenset[BackendKind]] = {
    StateClass.EPHEMERAL_REQUEST_STATE: frozenset({BackendKind.MEMORY}),
    StateClass.RESTART_SAFE_LOCAL_STATE: frozenset({BackendKind.SQLITE}),
    StateClass.SHARED_DURABLE_WORKFLOW_STATE: frozenset({BackendKind.SQLITE, BackendKind.POSTGRES}),
    StateClass.AUDIT_ANALYTICS_TELEMETRY: frozenset({BackendKind.SQLITE, BackendKind.POSTGRES}),
    StateClass.DERIVED_PROJECTION_STATE: frozenset({BackendKind.SQLITE, BackendKind.POSTGRES}),
}
