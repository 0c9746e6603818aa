"""Prometheus metrics of one app instance (its own registry, never the process default)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class RouterMetrics:
    def __init__(self) -> None:
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

        self.replay_dropped = Gauge(
            "routekeeper_replay_dropped_records",
            "Replay records not stored since start, by reason (queue_full, db_unavailable, "
            "value_refused).",
            ["reason"],
            registry=self.registry,
        )
        self.replay_ack_timeouts = Gauge(
            "routekeeper_replay_ack_timeouts",
            "Answers sent before their replay record was known to be committed, since start.",
            registry=self.registry,
        )
        self.replay_queued = Gauge(
            "routekeeper_replay_queued_records",
            "Replay records waiting for the writer.",
            registry=self.registry,
        )

    def observe(self, decision: str | None, model: str, outcome: str, seconds: float) -> None:
        label = decision or "(pass-through)"
        self.requests.labels(label, model, outcome).inc()
        self.latency.labels(label, model).observe(seconds)

    def upstream_failed(self, kind: str, status: int | None) -> None:
        self.upstream_errors.labels(kind, str(status or "")).inc()

    def render(self, dropped: dict[str, int], queued: int, ack_timeouts: int = 0) -> bytes:
        for reason, count in dropped.items():
            self.replay_dropped.labels(reason).set(count)
        self.replay_queued.set(queued)
        self.replay_ack_timeouts.set(ack_timeouts)
        return generate_latest(self.registry)
