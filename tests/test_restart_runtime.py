"""Kill-and-restart tests of the runtime surfaces, on SQLite and PostgreSQL, through the
real server process."""

import os
import signal
import time

import httpx
import pytest

from routekeeper.contract import SURFACES
from routekeeper.testing import ServerProcess

pytestmark = pytest.mark.slow

# What a crash sweep may take beyond its period on a loaded 2-core machine.
SWEEP_SLACK = 1.0


def get(server: ServerProcess, path: str, **params) -> dict:
    response = httpx.get(f"{server.url}{path}", params=params, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def replica(server: ServerProcess, replica_id: str) -> dict:
    rows = get(server, "/api/replicas", limit=100)["data"]
    return next(r for r in rows if r["id"] == replica_id)


def events(server: ServerProcess, **filters) -> list[dict]:
    out, after = [], None
    while True:
        params = {"order": "asc", "limit": 100, **filters}
        if after is not None:
            params["after"] = after
        page = get(server, "/api/runtime/events", **params)
        out += page["data"]
        if not page["has_more"]:
            return out
        after = page["last_id"]


@pytest.mark.restart(surface="runtime_status")
def test_sigkill_is_recorded_as_a_crash_by_the_next_replica(server_factory, restart_backend):
    """On SQLite the free flock is proof: the crash is recorded before the next replica is
    ready. On PostgreSQL a free advisory lock may be a live replica's lost session, so the
    next replica records the crash once the heartbeat is older than stale_after_seconds and
    it has itself been settled that long: within stale + heartbeat of its start."""
    heartbeat, stale = 0.5, 3.0
    runtime = {"heartbeat_seconds": heartbeat, "stale_after_seconds": stale}
    first = server_factory(runtime=runtime).start()
    dead_id = get(first, "/readyz")["replica_id"]
    first.kill()

    second = server_factory(runtime=runtime).start()
    started = time.monotonic()
    me = get(second, "/readyz")["replica_id"]
    if restart_backend == "postgres":
        assert replica(second, dead_id)["phase"] == "ready"  # not judged at start
        while replica(second, dead_id)["phase"] != "crashed":
            assert time.monotonic() - started < stale + heartbeat + SWEEP_SLACK, second.log_tail()
            time.sleep(0.1)
    dead = replica(second, dead_id)
    assert dead["phase"] == "crashed"
    assert dead["stopped_at"] is not None

    crash = events(second, replica_id=dead_id, kind="replica.crashed")
    assert len(crash) == 1
    data = crash[0]["data"]
    assert data["detected_by"] == me
    assert data["reason"] == "lock_free"
    assert data["last_phase"] == "ready"
    # the event names the last heartbeat the dead replica stored
    assert data["last_heartbeat_at"].replace("+00:00", "Z") == dead["heartbeat_at"].replace(
        "+00:00", "Z"
    )

    ready = [e for e in events(second, replica_id=me) if e["to_phase"] == "ready"]
    recovered = events(second, replica_id=me, kind="recovery.completed")
    if restart_backend == "sqlite":
        assert len(ready) == 1 and crash[0]["id"] < ready[0]["id"], "crash recorded after ready"
        found = {"dead_found": 1, "marked_crashed": 1}
    else:
        found = {"dead_found": 0, "marked_crashed": 0}
    assert [e["data"]["surface"] for e in recovered] == [
        name for name, surface in SURFACES.items() if surface.recovery_step
    ]
    assert recovered[0]["data"] == {"surface": "runtime_status", "counts": found}
    assert all(not any(e["data"]["counts"].values()) for e in recovered[1:])


@pytest.mark.restart(surface="runtime_status")
def test_sigterm_is_stopped_never_crashed(server_factory):
    first = server_factory().start()
    first_id = get(first, "/readyz")["replica_id"]
    assert first.terminate() == 0
    second = server_factory().start()
    assert replica(second, first_id)["phase"] == "stopped"
    assert events(second, replica_id=first_id, kind="replica.crashed") == []
    recovered = events(
        second, kind="recovery.completed", replica_id=get(second, "/readyz")["replica_id"]
    )
    assert recovered[0]["data"]["counts"] == {"dead_found": 0, "marked_crashed": 0}


@pytest.mark.restart(surface="runtime_events")
def test_every_event_seen_before_sigkill_is_there_after_restart(server_factory):
    first = server_factory(runtime={"heartbeat_seconds": 0.2, "stale_after_seconds": 5}).start()
    deadline = time.monotonic() + 10
    while len(seen := events(first)) < 5:
        assert time.monotonic() < deadline, (seen, first.log_tail())
        time.sleep(0.05)
    first.kill()
    second = server_factory().start()
    after = events(second)
    by_id = {e["id"]: e for e in after}
    for event in seen:
        assert by_id.get(event["id"]) == event
    assert max(by_id) > max(e["id"] for e in seen)  # new events append after the old ones


def test_a_survivor_marks_a_killed_peer_crashed_without_a_restart(server_factory):
    """Two replicas on one state; SIGKILL one: the other's periodic sweep records it within
    stale_after_seconds + heartbeat_seconds (SQLite: at its next sweep, the flock being proof).
    Restarting the killed one adds no second crash."""
    heartbeat, stale = 1.0, 4.0
    runtime = {"heartbeat_seconds": heartbeat, "stale_after_seconds": stale}
    survivor = server_factory(runtime=runtime).start()
    victim = server_factory(runtime=runtime).start()
    victim_id = get(victim, "/readyz")["replica_id"]
    assert replica(survivor, victim_id)["phase"] == "ready"

    victim.kill()
    killed_at = time.monotonic()
    while replica(survivor, victim_id)["phase"] != "crashed":
        assert time.monotonic() - killed_at < stale + heartbeat + 2.0, survivor.log_tail()
        time.sleep(0.1)
    detected_after = time.monotonic() - killed_at
    print(f"crash of {victim_id} recorded {detected_after:.2f}s after SIGKILL")
    assert detected_after <= stale + heartbeat + SWEEP_SLACK
    crash = events(survivor, replica_id=victim_id, kind="replica.crashed")
    assert len(crash) == 1
    assert crash[0]["data"]["detected_by"] == get(survivor, "/readyz")["replica_id"]

    victim.start()
    assert len(events(victim, replica_id=victim_id, kind="replica.crashed")) == 1
    time.sleep(heartbeat * 2)  # two sweeps by both
    assert len(events(survivor, replica_id=victim_id, kind="replica.crashed")) == 1


def _ready(server: ServerProcess) -> dict[str, dict]:
    rows = get(server, "/api/replicas", limit=100, phase="ready")["data"]
    return {r["id"]: r for r in rows}


@pytest.mark.restart(surface="runtime_status")
def test_a_killed_worker_is_recorded_crashed_once_and_replaced(server_factory, restart_backend):
    """serve --workers 2: SIGKILL one worker; the other keeps serving, records the crash
    exactly once (SQLite: the free flock at its next sweep; PostgreSQL: once the heartbeat is
    older than stale_after_seconds), and the supervisor starts a replacement replica."""
    heartbeat, stale = 0.5, 3.0
    server = server_factory(
        workers=2, runtime={"heartbeat_seconds": heartbeat, "stale_after_seconds": stale}
    ).start()
    deadline = time.monotonic() + 30
    while len(before := _ready(server)) != 2:
        assert time.monotonic() < deadline, server.log_tail()
        time.sleep(0.1)
    victim_id, victim = next(iter(before.items()))
    os.kill(victim["pid"], signal.SIGKILL)
    killed_at = time.monotonic()
    replacement: set[str] = set()
    while True:
        # every request is answered meanwhile: the survivor accepts on the shared port
        assert get(server, "/livez")["status"] == "alive"
        crashed = replica(server, victim_id)["phase"] == "crashed"
        replacement = set(_ready(server)) - set(before)
        if crashed and replacement:
            break
        assert time.monotonic() - killed_at < stale + heartbeat + 10, server.log_tail()
        time.sleep(0.1)
    print(f"crash recorded and replaced within {time.monotonic() - killed_at:.2f}s")
    assert len(replacement) == 1 and victim_id not in _ready(server)
    time.sleep(heartbeat * 3)  # more sweeps by the survivor and the replacement
    crash = events(server, replica_id=victim_id, kind="replica.crashed")
    assert len(crash) == 1
    assert crash[0]["data"]["detected_by"] in set(before) | replacement
    assert crash[0]["data"]["detected_by"] != victim_id
    assert "starting a replacement" in server.log()
    assert server.terminate() == 0
    assert all(replica(server_factory().start(), rid)["phase"] == "stopped" for rid in replacement)
