"""What a surface hands the replica besides its store: a background component (started when
the replica is ready, stopped before it records ``stopped``) with its contribution to
``/api/status`` (a JSON object on the surface's row) and to ``/metrics`` (metric families,
read at scrape time). The replica, the status snapshot and the metrics endpoint iterate
components and name no surface."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from routekeeper.storage.state import StateStorage


class Component(Protocol):
    surface: str
    """The registered surface it belongs to."""

    def begin(self) -> None:
        """Start background work (called once the replica's recovery is done)."""

    async def stop(self) -> None:
        """Finish: write what is left (graceful shutdown; the caller bounds the time)."""

    def status(self) -> dict[str, Any]:
        """What it reports on its surface's row of ``/api/status`` (JSON values)."""

    def metrics(self) -> Iterable[Metric]:
        """Its metric families, as they stand now."""


class ComponentMetrics(Collector):
    """A Prometheus collector over the components (register it on the app's registry)."""

    def __init__(self, components: Sequence[Component]) -> None:
        self.components = components

    def collect(self) -> Iterator[Metric]:
        for component in self.components:
            yield from component.metrics()

    def describe(self) -> Iterator[Metric]:
        return self.collect()


class StorageMetrics(Collector):
    """The storage of the process at scrape time: per backend, the write transactions that
    waited for another process's SQLite write lock (the workers of one ``serve --workers N``
    share one file) and the seconds they waited."""

    def __init__(self, storage: StateStorage) -> None:
        self.storage = storage

    def collect(self) -> Iterator[Metric]:
        waits = CounterMetricFamily(
            "routekeeper_storage_write_lock_waits",
            "Write transactions that waited for another process's SQLite write lock.",
            labels=["backend"],
        )
        seconds = CounterMetricFamily(
            "routekeeper_storage_write_lock_wait_seconds",
            "Seconds write transactions waited for another process's SQLite write lock.",
            labels=["backend"],
        )
        for name, db in self.storage.databases.items():
            waits.add_metric([name], db.write_lock_waits.waits)
            seconds.add_metric([name], db.write_lock_waits.seconds)
        yield waits
        yield seconds

    def describe(self) -> Iterator[Metric]:
        return self.collect()
