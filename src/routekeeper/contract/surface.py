"""What a state surface is: its class, what it stores, what a restart means for it, and its
typed facts (ids, tenancy, writes, retention, lifecycle, recovery). Each surface family's
module declares its own; ``contract.surfaces`` lists them."""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from routekeeper.contract.classes import StateClass, is_durable, is_shared
from routekeeper.contract.lifecycle import Lifecycle


class Owner(enum.StrEnum):
    ROUTER = "router"
    DASHBOARD = "dashboard"


class WriteMode(enum.StrEnum):
    ACKNOWLEDGED = "acknowledged"
    """A client is told about a write (2xx, an id, a terminal event) only after its commit."""
    BATCH = "batch"
    """Written by a batched writer after the answer; what cannot be written is counted."""


@dataclass(frozen=True)
class Writes:
    """How the surface's writes reach the database. ``setting`` (a dotted settings path)
    lets the operator choose the mode; ``mode`` is the default."""

    mode: WriteMode = WriteMode.ACKNOWLEDGED
    setting: str | None = None


@dataclass(frozen=True)
class Retention:
    """Which settings bound the surface's rows (dotted settings paths): an age in days, a
    count of the newest rows kept, or both. ``applies_to`` says which rows may go."""

    max_age_days: str | None = None
    max_count: str | None = None
    applies_to: str = "every row"

    def settings(self) -> tuple[str, ...]:
        return tuple(s for s in (self.max_age_days, self.max_count) if s)


@dataclass(frozen=True)
class Surface:
    """One declared piece of state.

    ``restart_expectation`` says what a user sees after the process restarts (or is killed);
    ``recovery`` says what startup does about state a crash left behind.
    """

    name: str
    owner: Owner
    state_class: StateClass
    stores: str
    restart_expectation: str
    recovery: str
    colocated_with: str | None = None
    """Another surface this one commits in the same transaction with: both must share a backend."""
    id_prefix: str | None = None
    """The prefix of its records' ids (``rpl`` -> ``rpl_...``); None for integer ids."""
    tenant_scoped: bool = False
    """Its rows carry ``tenant_id`` and every read filters by it, in the store."""
    writes: Writes = Writes()
    retention: Retention | None = None
    """None: kept until deleted."""
    lifecycle: Lifecycle[Any] | None = None
    """The states its records move through, when they have any."""
    recovery_step: bool = False
    """Its store registers a recovery step (``recovery`` says what it does); a test checks
    the two agree."""

    @property
    def durable(self) -> bool:
        return is_durable(self.state_class)

    @property
    def shared(self) -> bool:
        return is_shared(self.state_class)


class SurfaceRegistry(Mapping[str, Surface]):
    """An immutable, ordered name -> surface mapping that refuses duplicate names."""

    def __init__(self, surfaces: tuple[Surface, ...]) -> None:
        by_name: dict[str, Surface] = {}
        for surface in surfaces:
            if surface.name in by_name:
                raise ValueError(f"surface {surface.name!r} is registered twice")
            by_name[surface.name] = surface
        self._by_name = by_name

    def __getitem__(self, name: str) -> Surface:
        return self._by_name[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)
