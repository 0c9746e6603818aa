"""Where each registered surface lives under a configuration, and the contract check.

``check_contract`` is what ``routekeeper state check`` and ``serve`` run before touching any
database: a durable surface on a memory backend without ``state.allow_ephemeral``, a shared
surface on a node-local backend in ``mode: shared``, or colocated surfaces split across
backends are refused with the surface, its class and the fix."""

from __future__ import annotations

from dataclasses import dataclass

from routekeeper.contract import ALLOWED_BACKENDS, SURFACES, BackendKind, Surface
from routekeeper.contract.errors import ContractViolation
from routekeeper.settings import PostgresBackend, Settings, SQLiteBackend, redact_dsn


@dataclass(frozen=True)
class SurfacePlacement:
    surface: Surface
    backend: str
    kind: BackendKind
    location: str
    ephemeral: bool
    """True when the surface is kept in memory only (lost on restart)."""


def backend_location(settings: Settings, name: str) -> str:
    backend = settings.state.backends[name]
    if isinstance(backend, SQLiteBackend):
        return str(settings.resolve_path(backend.path))
    if isinstance(backend, PostgresBackend):
        return redact_dsn(backend.dsn)
    return "memory"


def placements(settings: Settings) -> list[SurfacePlacement]:
    """Every registered surface with its backend, in registry order."""
    out = []
    for surface in SURFACES.values():
        name = settings.state.backend_name_for(surface.name)
        kind = settings.state.backend_kind(name)
        out.append(
            SurfacePlacement(
                surface=surface,
                backend=name,
                kind=kind,
                location=backend_location(settings, name),
                ephemeral=kind is BackendKind.MEMORY,
            )
        )
    return out


def contract_problems(settings: Settings) -> list[str]:
    """Every way the configuration breaks the state contract (empty when it holds)."""
    problems: list[str] = []
    allowed_ephemeral = set(settings.state.allow_ephemeral)
    by_name = {p.surface.name: p for p in placements(settings)}
    shared_mode = settings.state.mode == "shared"
    for placement in by_name.values():
        surface, kind = placement.surface, placement.kind
        where = f"backend {placement.backend!r} ({kind})"
        klass = surface.state_class.value
        key = f"state.surfaces.{surface.name}.backend"
        if surface.durable and kind is BackendKind.MEMORY:
            if surface.name not in allowed_ephemeral:
                problems.append(
                    f"surface {surface.name} ({klass}) is on {where}, which loses it on "
                    f"restart. Fix: point {key} at a sqlite or postgres backend, or accept the "
                    f"loss with state.allow_ephemeral: [{surface.name}]."
                )
            if shared_mode and surface.shared:
                problems.append(
                    f"surface {surface.name} ({klass}) is on {where}, but state.mode is shared "
                    f"and each replica would keep its own copy. Fix: point {key} at a postgres "
                    "backend."
                )
            continue
        if shared_mode and surface.shared and kind is not BackendKind.POSTGRES:
            problems.append(
                f"surface {surface.name} ({klass}) is on {where}, which is local to one node, "
                f"but state.mode is shared. Fix: point {key} (or state.default_backend) at a "
                "postgres backend."
            )
            continue
        if kind not in ALLOWED_BACKENDS[surface.state_class]:
            allowed = ", ".join(sorted(k.value for k in ALLOWED_BACKENDS[surface.state_class]))
            problems.append(
                f"surface {surface.name} ({klass}) is on {where}; its class allows {allowed}. "
                f"Fix: point {key} at one of those."
            )
        partner = surface.colocated_with
        if partner and partner in by_name and by_name[partner].backend != placement.backend:
            problems.append(
                f"surface {surface.name} ({klass}) is on backend {placement.backend!r} but "
                f"commits together with {partner} on {by_name[partner].backend!r}. Fix: put "
                f"both on the same backend."
            )
    return problems


def check_contract(settings: Settings) -> list[SurfacePlacement]:
    """The placements, or ContractViolation naming each offending surface and its fix."""
    problems = contract_problems(settings)
    if problems:
        raise ContractViolation(problems)
    return placements(settings)
