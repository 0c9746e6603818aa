"""Prometheus metrics of one app instance (its own registry, never the process default)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from routekeeper.contract.replay import PASS_THROUGH
from routekeeper.runtime.components import Component, ComponentMetrics
from routekeeper.runtime.worker_board import (
    WorkerBoard,
    decode_families,
    encode_families,
    merge_families,
)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class RouterMetrics:
    """The app's registry: request counters and latency, upstream errors, and what the
    components and ``collectors`` report at scrape time. With a worker ``board`` (``serve
    --workers N``) :meth:`render` shows every worker of the serve, each series labelled with
    its ``replica``."""

    def __init__(
        self,
        components: Sequence[Component] = (),
        *,
        collectors: Sequence[Collector] = (),
        board: WorkerBoard | None = None,
    ) -> None:
        self.board = board
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "routekeeper_requests_total",
            "Chat requests by routing decision, selected model and outcome.",
            ["decision", "model", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "routekeeper_request_duration_seconds",
            "Time from request to the end of the response, by decision and model.",
            ["decision", "model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.upstream_errors = Counter(
            "routekeeper_upstream_errors_total",
            "Upstream failures by kind (http, timeout, connect, protocol) and status.",
            ["kind", "status"],
            registry=self.registry,
        )

        self.registry.register(ComponentMetrics(components))
        for collector in collectors:
            self.registry.register(collector)

    def observe(self, decision: str | None, model: str, outcome: str, seconds: float) -> None:
        label = decision or PASS_THROUGH
        self.requests.labels(label, model, outcome).inc()
        self.latency.labels(label, model).observe(seconds)

    def upstream_failed(self, kind: str, status: int | None) -> None:
        self.upstream_errors.labels(kind, str(status or "")).inc()

    def render(self) -> bytes:
        if self.board is None:
            return generate_latest(self.registry)
        own = decode_families(
            encode_families(self.registry.collect()), replica=self.board.replica_id or ""
        )
        others = [
            decode_families(entry["metrics"], replica=entry["replica_id"])
            for entry in self.board.others()
        ]
        merged = CollectorRegistry(auto_describe=False)
        merged.register(_Families(merge_families([own, *others])))
        return generate_latest(merged)


class _Families(Collector):
    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)
