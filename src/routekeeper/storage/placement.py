"""Where each registered surface lives under a configuration, and the contract check.

``check_contract`` is what ``routekeeper state check`` and ``serve`` run before touching any
database: a durable surface on a memory backend without ``state.allow_ephemeral``, a shared
surface on a node-local backend in ``mode: shared``, or colocated surfaces split across
backends are refused with the surface, its class and the fix. ``processes`` is how many
replicas one ``serve`` runs (``--workers N``): they share the workspace's SQLite file (WAL,
each with its own writer waiting on ``busy_timeout``) but not a memory backend, so with more
than one a durable surface on memory is refused even when ``state.allow_ephemeral`` names it."""

from __future__ import annotations

from dataclasses import dataclass

from routekeeper.contract import ALLOWED_BACKENDS, SURFACES, BackendKind, Surface
from routekeeper.contract.errors import ContractViolation
from routekeeper.storage.config import PostgresBackend, SQLiteBackend, StorageConfig, redact_dsn


@dataclass(frozen=True)
class SurfacePlacement:
    surface: Surface
    backend: str
    kind: BackendKind
    location: str
    ephemeral: bool
    """True when the surface is kept in memory only (lost on restart)."""


def backend_location(settings: StorageConfig, name: str) -> str:
    backend = settings.state.backends[name]
    if isinstance(backend, SQLiteBackend):
        return str(settings.resolve_path(backend.path))
    if isinstance(backend, PostgresBackend):
        return redact_dsn(backend.dsn)
    return "memory"


def placements(settings: StorageConfig) -> list[SurfacePlacement]:
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


def contract_problems(settings: StorageConfig, *, processes: int = 1) -> list[str]:
    """Every way the configuration breaks the state contract (empty when it holds)."""
    by_name = {p.surface.name: p for p in placements(settings)}
    problems: list[str] = []
    for placement in by_name.values():
        problems += _backend_problems(settings, placement) or _process_problems(
            placement, processes
        )
        surface, partner = placement.surface, placement.surface.colocated_with
        if partner and partner in by_name and by_name[partner].backend != placement.backend:
            problems.append(
                f"surface {surface.name} ({surface.state_class.value}) is on backend "
                f"{placement.backend!r} but commits together with {partner} on "
                f"{by_name[partner].backend!r}. Fix: put both on the same backend."
            )
    return problems


def _backend_problems(settings: StorageConfig, placement: SurfacePlacement) -> list[str]:
    """Whether the surface's class may live on its backend kind (at most one problem)."""
    surface, kind = placement.surface, placement.kind
    shared_mode = settings.state.mode == "shared"
    where = f"backend {placement.backend!r} ({kind})"
    name = f"surface {surface.name} ({surface.state_class.value})"
    key = f"state.surfaces.{surface.name}.backend"
    if surface.durable and kind is BackendKind.MEMORY:
        if surface.name not in settings.state.allow_ephemeral:
            return [
                f"{name} is on {where}, which loses it on restart. Fix: point {key} at a "
                f"sqlite or postgres backend, or accept the loss with "
                f"state.allow_ephemeral: [{surface.name}]."
            ]
        if shared_mode and surface.shared:
            return [
                f"{name} is on {where}, but state.mode is shared and each replica would keep "
                f"its own copy. Fix: point {key} at a postgres backend."
            ]
        return []
    if shared_mode and surface.shared and kind is not BackendKind.POSTGRES:
        return [
            f"{name} is on {where}, which is local to one node, but state.mode is shared. "
            f"Fix: point {key} (or state.default_backend) at a postgres backend."
        ]
    if kind not in ALLOWED_BACKENDS[surface.state_class]:
        allowed = ", ".join(sorted(k.value for k in ALLOWED_BACKENDS[surface.state_class]))
        return [f"{name} is on {where}; its class allows {allowed}. Fix: point {key} at one."]
    return []


def _process_problems(placement: SurfacePlacement, processes: int) -> list[str]:
    """Whether ``processes`` replicas of one serve can share the surface's backend."""
    surface = placement.surface
    if processes <= 1 or not surface.durable or placement.kind is not BackendKind.MEMORY:
        return []
    return [
        f"surface {surface.name} ({surface.state_class.value}) is on backend "
        f"{placement.backend!r} ({placement.kind}), and each of the {processes} workers would "
        f"keep its own copy. Fix: point state.surfaces.{surface.name}.backend at a sqlite or "
        "postgres backend, or run one worker (server.workers: 1)."
    ]


def check_contract(settings: StorageConfig, *, processes: int = 1) -> list[SurfacePlacement]:
    """The placements, or ContractViolation naming each offending surface and its fix."""
    problems = contract_problems(settings, processes=processes)
    if problems:
        raise ContractViolation(problems)
    return placements(settings)
