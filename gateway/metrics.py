"""Prometheus metrics, one registry per app so several apps can share a process (tests)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    """The gateway's counters and gauges."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.submissions = Counter(
            "patio_submissions_total",
            "Envelopes by outcome",
            ["contract", "status"],
            registry=self.registry,
        )
        self.requests = Histogram(
            "patio_http_request_seconds",
            "HTTP request latency",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.tree_size = Gauge(
            "patio_checkpoint_tree_size",
            "Tree size of the latest checkpoint",
            registry=self.registry,
        )
        self.leader = Gauge(
            "patio_leader",
            "1 while this process holds the role among the gateways on its database",
            ["role"],
            registry=self.registry,
        )
        self.seal_seconds = Histogram(
            "patio_seal_seconds", "Time to seal a checkpoint", registry=self.registry
        )
