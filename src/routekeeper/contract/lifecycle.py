"""A lifecycle: the states a record moves through, which of them are terminal, and the
allowed FROM -> TO moves. Stores check every move against one (see
``storage.surface_store.SurfaceStore.transition``); replica phases and replay records are its
first instances."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from routekeeper.contract.errors import InvalidTransition

S = TypeVar("S", bound=enum.StrEnum)


@dataclass(frozen=True)
class Lifecycle(Generic[S]):
    """``moves[s]`` is every state ``s`` may move to; a terminal state moves nowhere."""

    name: str
    states: type[S]
    initial: S
    moves: Mapping[S, frozenset[S]]

    def __post_init__(self) -> None:
        missing = [s for s in self.states if s not in self.moves]
        if missing:
            raise ValueError(f"lifecycle {self.name}: no moves declared for {missing}")
        unknown = {t for targets in self.moves.values() for t in targets} - set(self.states)
        if unknown:
            raise ValueError(f"lifecycle {self.name}: moves to unknown states {unknown}")

    @classmethod
    def of(
        cls, name: str, states: type[S], initial: S, moves: Mapping[S, Iterable[S]]
    ) -> Lifecycle[S]:
        return cls(name, states, initial, {s: frozenset(t) for s, t in moves.items()})

    @property
    def terminal(self) -> frozenset[S]:
        return frozenset(s for s in self.states if not self.moves[s])

    @property
    def live(self) -> frozenset[S]:
        return frozenset(s for s in self.states if self.moves[s])

    def allows(self, from_state: S, to_state: S) -> bool:
        return to_state in self.moves[from_state]

    def check(self, record_id: str, from_state: S, to_state: S) -> None:
        """Raise InvalidTransition (409) unless the move is allowed."""
        if not self.allows(from_state, to_state):
            raise InvalidTransition(
                f"{self.name} {record_id} cannot go from {from_state} to {to_state}",
                details={"id": record_id, "from": from_state.value, "to": to_state.value},
            )
