"""CPU time of the processes of a benchmark run, and the request rate the machine's cores
allow at those costs.

Every process of a run (the load generator, the fake upstream, the server with its workers)
takes CPU for each request. With ``cores`` cores, no run can exceed
``cores / (sum of their CPU seconds per request)`` requests per second: that is the
``ceiling_rps`` a throughput figure is compared with (``share_of_ceiling``). A ratio target
between two runs (two workers against one) is possible only if the ceiling of the faster run
allows it (``ceiling_ratio``).
"""

from __future__ import annotations

import os
import resource

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()  # the name may hold spaces


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads); 0 when it is gone."""
    rest = _stat_fields(pid)
    return (int(rest[11]) + int(rest[12])) / CLK_TCK if rest else 0.0


def tree_cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and every live descendant."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        rest = _stat_fields(int(entry))
        if rest is None:
            continue
        parents[int(entry)] = int(rest[1])
        ticks[int(entry)] = int(rest[11]) + int(rest[12])  # utime, stime
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        children = [p for p, pp in parents.items() if pp == parent and p not in tree]
        tree.update(children)
        frontier += children
    return sum(ticks.get(p, 0) for p in tree) / CLK_TCK


def waited_children_cpu_seconds() -> float:
    """utime + stime of this process's children that ended and were waited for (the load
    generator once ``subprocess.run`` returned)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def ceiling(
    cores: float, rps: float, cpu_ms_per_request: dict[str, float | None]
) -> dict[str, float | None]:
    """The rate ``cores`` allow at these per-request costs (milliseconds of CPU per request
    of each process), and the share of it ``rps`` reached."""
    costs = list(cpu_ms_per_request.values())
    if any(c is None for c in costs) or not sum(c for c in costs if c is not None):
        return {"cpu_ms_per_request_all": None, "ceiling_rps": None, "share_of_ceiling": None}
    total = sum(c for c in costs if c is not None)
    top = cores * 1000 / total
    return {
        "cpu_ms_per_request_all": round(total, 3),
        "ceiling_rps": round(top, 1),
        "share_of_ceiling": round(rps / top, 3),
    }
