"""The replay writer's counters of a running ``routekeeper serve`` (the ``router_replay`` row
of ``/api/status``), summed over its workers, and what a measured run added to them: a run
whose records were dropped must say so next to its throughput."""

from __future__ import annotations

from typing import Any

from routekeeper.testing import ServerProcess

COUNTED = ("written", "batches", "ack_timeout")


def replay_counters(server: ServerProcess) -> dict[str, Any]:
    """``written``, ``batches``, ``ack_timeout``, ``dropped`` by reason and ``queued`` now,
    summed over the workers (each as it last reported)."""
    row = server.surface_status("router_replay")
    reports = list((row.get("workers") or {}).values()) or [row["component"]]
    total: dict[str, Any] = {name: 0 for name in (*COUNTED, "queued")}
    total["dropped"] = {}
    for report in reports:
        for name in (*COUNTED, "queued"):
            total[name] += report[name]
        for reason, count in report["dropped"].items():
            total["dropped"][reason] = total["dropped"].get(reason, 0) + count
    return total


def settled_counters(server: ServerProcess, timeout: float = 30.0) -> dict[str, Any]:
    """The counters once every worker's writer has nothing queued."""
    server.wait_flushed(timeout=timeout)
    return replay_counters(server)


def added(before: dict[str, Any], after: dict[str, Any], queued_at_end: int) -> dict[str, Any]:
    """What a run added to the counters (``after``: once the writers had nothing queued), and
    how many records were queued when its load stopped."""
    out: dict[str, Any] = {name: after[name] - before[name] for name in COUNTED}
    out["queued_at_end"] = queued_at_end
    out["dropped"] = {
        reason: count - before["dropped"].get(reason, 0)
        for reason, count in after["dropped"].items()
    }
    out["dropped_total"] = sum(out["dropped"].values())
    return out


def summed(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Several runs' additions together."""
    out: dict[str, Any] = {name: sum(r[name] for r in runs) for name in COUNTED}
    out["dropped"] = {}
    for run in runs:
        for reason, count in run["dropped"].items():
            out["dropped"][reason] = out["dropped"].get(reason, 0) + count
    out["dropped_total"] = sum(out["dropped"].values())
    out["queued_at_end_max"] = max((r.get("queued_at_end", 0) for r in runs), default=0)
    return out
