"""The pieces every store is built from: the after-commit hook, the generic lifecycle, the
record mapping and the dialect object."""

from __future__ import annotations

import ast
import dataclasses
import enum
from pathlib import Path

import pytest
from sqlalchemy import select

from routekeeper.contract.errors import InvalidTransition
from routekeeper.contract.lifecycle import Lifecycle
from routekeeper.contract.replay import REPLAY_LIFECYCLE, LifecycleState
from routekeeper.contract.runtime import (
    REPLICA_LIFECYCLE,
    ReplicaPhase,
    RuntimeEvent,
    RuntimeEventKind,
)
from routekeeper.storage.database import after_commit
from routekeeper.storage.records import from_row, to_row, updated
from routekeeper.storage.schema.runtime import runtime_events
from routekeeper.storage.types import utcnow

SRC = Path(__file__).resolve().parents[1] / "src" / "routekeeper"


def _event_row(n: int) -> dict:
    return {
        "replica_id": f"rep_{n}",
        "kind": "recovery.completed",
        "from_phase": None,
        "to_phase": None,
        "data": {"n": n},
        "occurred_at": utcnow(),
    }


async def test_after_commit_runs_once_the_write_is_visible_and_never_after_a_rollback(
    state_storage,
):
    db = state_storage.runtime.db
    seen: list[int] = []

    async def visible_elsewhere() -> None:
        async with db.read() as conn:  # another connection: only committed rows are there
            seen.append(len((await conn.execute(select(runtime_events))).all()))

    async with db.write() as conn:
        await conn.execute(runtime_events.insert().values(**_event_row(1)))
        after_commit(conn, visible_elsewhere)
        assert seen == []
    assert seen == [1]

    class Refused(Exception):
        pass

    with pytest.raises(Refused):
        async with db.write() as conn:
            await conn.execute(runtime_events.insert().values(**_event_row(2)))
            after_commit(conn, lambda: seen.append(-1))
            raise Refused
    assert seen == [1]

    def broken() -> None:
        raise RuntimeError("a listener failed")

    async with db.write() as conn:  # a failing listener does not undo or fail the write
        await conn.execute(runtime_events.insert().values(**_event_row(3)))
        after_commit(conn, broken)
    assert await db.count_rows(runtime_events) == 2


async def test_after_commit_needs_a_write_transaction(state_storage):
    async with state_storage.runtime.db.read() as conn:
        with pytest.raises(RuntimeError, match=r"Database\.write"):
            after_commit(conn, lambda: None)


class Light(enum.StrEnum):
    OFF = "off"
    ON = "on"
    BROKEN = "broken"


def test_a_lifecycle_knows_its_terminal_and_live_states_and_refuses_other_moves():
    lifecycle = Lifecycle.of(
        "light",
        Light,
        Light.OFF,
        {
            Light.OFF: {Light.ON, Light.BROKEN},
            Light.ON: {Light.OFF, Light.BROKEN},
            Light.BROKEN: (),
        },
    )
    assert lifecycle.terminal == {Light.BROKEN} and lifecycle.live == {Light.OFF, Light.ON}
    lifecycle.check("l1", Light.OFF, Light.ON)
    with pytest.raises(InvalidTransition, match="light l1 cannot go from broken to on") as err:
        lifecycle.check("l1", Light.BROKEN, Light.ON)
    assert err.value.details == {"id": "l1", "from": "broken", "to": "on"}
    with pytest.raises(ValueError, match="no moves declared"):
        Lifecycle.of("half", Light, Light.OFF, {Light.OFF: {Light.ON}})


def test_replica_phases_and_replay_records_are_lifecycles():
    assert REPLICA_LIFECYCLE.initial is ReplicaPhase.STARTING
    assert REPLICA_LIFECYCLE.terminal == {
        ReplicaPhase.STOPPED,
        ReplicaPhase.FAILED,
        ReplicaPhase.CRASHED,
    }
    assert REPLAY_LIFECYCLE.live == {LifecycleState.IN_PROGRESS}
    assert not REPLAY_LIFECYCLE.allows(LifecycleState.COMPLETED, LifecycleState.IN_PROGRESS)


def _crashed_event() -> RuntimeEvent:
    return RuntimeEvent(
        id=7,
        replica_id="rep_1",
        kind=RuntimeEventKind.REPLICA_CRASHED,
        from_phase=ReplicaPhase.READY,
        to_phase=None,
        data={"a": 1},
        occurred_at=utcnow(),
    )


def test_records_map_to_rows_and_back_with_their_enums():
    event = _crashed_event()
    row = to_row(event)
    assert row["kind"] == "replica.crashed" and row["from_phase"] == "ready"
    assert from_row(RuntimeEvent, row) == event


def test_a_record_is_updated_as_replace_would_and_other_classes_through_replace():
    event = _crashed_event()
    changed = updated(event, to_phase=ReplicaPhase.STOPPED, data={"b": 2})
    assert changed == dataclasses.replace(event, to_phase=ReplicaPhase.STOPPED, data={"b": 2})
    assert type(changed) is RuntimeEvent and changed is not event
    assert event.to_phase is None and event.data == {"a": 1}  # the original is unchanged
    with pytest.raises(dataclasses.FrozenInstanceError):
        changed.id = 8  # type: ignore[misc]
    with pytest.raises(TypeError, match="no_such_field"):
        updated(event, no_such_field=1)

    @dataclasses.dataclass(frozen=True)
    class Checked:
        n: int

        def __post_init__(self) -> None:
            if self.n < 0:
                raise ValueError("n must not be negative")

    # A class whose __init__ does more than set fields is copied through replace: its
    # check still runs.
    with pytest.raises(ValueError, match="negative"):
        updated(Checked(1), n=-1)


def test_no_module_compares_dialect_or_backend_names_as_strings():
    """Stores ask the dialect object (``db.dialect.postgres``) or compare BackendKind members;
    frozen migration revisions are left as they shipped."""
    offenders = []
    for path in SRC.rglob("*.py"):
        if "migrations/versions" in path.as_posix():
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                names = [c.value for c in node.comparators if isinstance(c, ast.Constant)]
                if isinstance(node.left, ast.Constant):
                    names.append(node.left.value)
                if {"postgresql", "postgres", "sqlite", "memory"} & {
                    n for n in names if isinstance(n, str)
                } and _about_dialect(node):
                    offenders.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert offenders == []


def _about_dialect(node: ast.Compare) -> bool:
    text = ast.unparse(node)
    return "dialect" in text or ".kind" in text
