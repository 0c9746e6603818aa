"""The composition root builds and runs a replica without any web framework (what a worker
process without HTTP does)."""

from __future__ import annotations

from routekeeper.compose import build_replica
from routekeeper.contract.runtime import ReplicaPhase


async def test_a_replica_starts_serves_its_components_and_stops_without_http(state_settings):
    replica = build_replica(state_settings)
    runtime = replica.runtime
    await runtime.start()
    try:
        assert runtime.ready and runtime.accepting
        assert replica.recorder in runtime.components
        stored = await replica.storage.runtime.get(runtime.id)
        assert stored.phase is ReplicaPhase.READY
        assert replica.exchanges.accepting
    finally:
        await runtime.stop()
        await replica.aclose()
    assert runtime.phase is ReplicaPhase.STOPPED
    await replica.storage.open()
    try:
        assert (await replica.storage.runtime.get(runtime.id)).phase is ReplicaPhase.STOPPED
    finally:
        await replica.storage.close()
