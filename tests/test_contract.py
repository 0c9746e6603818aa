import os

import pytest

from routekeeper.contract import (
    SURFACES,
    Owner,
    StateClass,
    ids,
    is_durable,
    is_shared,
)
from routekeeper.contract.ids import has_prefix, new_id
from routekeeper.contract.runtime import ALLOWED_TRANSITIONS, ReplicaPhase, transition_allowed
from routekeeper.storage.stores import surface_tables


def test_the_five_class_names_are_exact():
    assert [c.value for c in StateClass] == [
        "ephemeral_request_state",
        "restart_safe_local_state",
        "shared_durable_workflow_state",
        "audit_analytics_telemetry",
        "derived_projection_state",
    ]


def test_durable_and_shared_follow_the_design_definitions():
    assert not is_durable(StateClass.EPHEMERAL_REQUEST_STATE)
    assert all(is_durable(c) for c in StateClass if c is not StateClass.EPHEMERAL_REQUEST_STATE)
    assert not is_shared(StateClass.RESTART_SAFE_LOCAL_STATE)
    assert not is_shared(StateClass.EPHEMERAL_REQUEST_STATE)
    assert is_shared(StateClass.SHARED_DURABLE_WORKFLOW_STATE)
    assert is_shared(StateClass.AUDIT_ANALYTICS_TELEMETRY)
    assert is_shared(StateClass.DERIVED_PROJECTION_STATE)


def test_registry_holds_exactly_the_surfaces_that_have_tables():
    # Only surfaces that exist are registered: each has storage, and all storage is declared.
    assert set(SURFACES) == set(surface_tables())
    assert SURFACES["runtime_status"].state_class is StateClass.SHARED_DURABLE_WORKFLOW_STATE
    assert SURFACES["runtime_events"].state_class is StateClass.AUDIT_ANALYTICS_TELEMETRY
    for surface in SURFACES.values():
        assert surface.owner in (Owner.ROUTER, Owner.DASHBOARD)
        assert surface.stores and surface.restart_expectation and surface.recovery
        if surface.colocated_with:
            assert surface.colocated_with in SURFACES


def test_every_table_belongs_to_exactly_one_surface():
    from routekeeper.storage.stores import declared_metadata as _declared

    metadata = _declared()

    owned = [t.name for tables in surface_tables().values() for t in tables]
    assert sorted(owned) == sorted(metadata.tables)


def test_ids_are_prefixed_and_time_ordered():
    a = new_id("rep", now_ms=1_000)
    b = new_id("rep", now_ms=2_000)
    assert a.startswith("rep_") and has_prefix(a, "rep")
    assert a < b
    assert len({new_id("rep") for _ in range(1000)}) == 1000
    assert not has_prefix("rpl_" + a[4:], "rep")


@pytest.fixture
def own_random_block():
    """The test draws from a patched source; the ids of later tests in this process must not."""
    ids._forget_random()
    yield
    ids._forget_random()


@pytest.mark.parametrize("random", [b"\x00" * 10, b"\xff" * 10, bytes(range(10))])
@pytest.mark.parametrize("ms", [0, 1_765_000_000_123, (1 << 48) - 1])
def test_an_id_is_its_48_bit_time_then_80_random_bits_in_crockford_base32(
    monkeypatch, own_random_block, random, ms
):
    monkeypatch.setattr("routekeeper.contract.ids.os.urandom", lambda n: random * (n // 10))
    value = ms << 80 | int.from_bytes(random, "big")
    digits = "".join("0123456789ABCDEFGHJKMNPQRSTVWXYZ"[value >> 5 * k & 31] for k in range(26))
    assert new_id("rep", now_ms=ms) == "rep_" + digits[::-1]
    with pytest.raises(ValueError, match="2-8 lowercase letters"):
        new_id("Rep", now_ms=ms)


def test_ids_take_their_random_bits_from_one_block_of_urandom_until_it_is_used_up(
    monkeypatch, own_random_block
):
    calls = []

    def urandom(n: int) -> bytes:
        calls.append(n)
        return bytes(range(256)) * (n // 256) + bytes(n % 256)

    monkeypatch.setattr("routekeeper.contract.ids.os.urandom", urandom)
    drawn = [ids._random_80_bits() for _ in range(ids._RANDOM_BLOCK // 10 + 1)]
    assert calls == [ids._RANDOM_BLOCK, ids._RANDOM_BLOCK]  # one block per 409 ids
    assert drawn[0] == int.from_bytes(bytes(range(10)), "big")
    assert drawn[1] == int.from_bytes(bytes(range(10, 20)), "big")
    assert drawn[-1] == drawn[0]  # the second block starts over (the fake source repeats)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_forked_child_never_repeats_its_parents_ids():
    new_id("rep")  # the parent holds a block
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.write(write, new_id("rep").encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 100).decode()
    os.close(read)
    os.close(write)
    assert child[-16:] != new_id("rep")[-16:]  # the 80 random bits differ


def test_replica_lifecycle_table():
    assert transition_allowed(ReplicaPhase.STARTING, ReplicaPhase.MIGRATING)
    assert transition_allowed(ReplicaPhase.READY, ReplicaPhase.DRAINING)
    assert transition_allowed(ReplicaPhase.DRAINING, ReplicaPhase.STOPPED)
    assert not transition_allowed(ReplicaPhase.READY, ReplicaPhase.STOPPED)
    assert not transition_allowed(ReplicaPhase.STOPPED, ReplicaPhase.READY)
    assert not transition_allowed(ReplicaPhase.STARTING, ReplicaPhase.READY)
    # terminal phases go nowhere; every phase has an entry
    assert set(ALLOWED_TRANSITIONS) == set(ReplicaPhase)
    assert ALLOWED_TRANSITIONS[ReplicaPhase.STOPPED] == frozenset()
