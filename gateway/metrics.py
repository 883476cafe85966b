"""Prometheus metrics, one registry per app so several apps can share a process (tests)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    """The gateway's counters and gauges."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.submissions = Counter(
            "patio_submissions_total",
            "Envelopes recorded, by outcome (accepted, duplicate, conflict)",
            ["contract", "status"],
            registry=self.registry,
        )
        self.refusals = Counter(
            "patio_refusals_total",
            "Envelopes refused before the log, by HTTP code and reason",
            ["contract", "code", "reason"],
            registry=self.registry,
        )
        self.writer_queue = Gauge(
            "patio_writer_queue_depth",
            "Batches sent to the writer process and not answered yet",
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
            "Tree size of the latest checkpoint (the log's sealed size)",
            registry=self.registry,
        )
        self.anchor_lag = Gauge(
            "patio_anchor_lag_entries",
            "Entries sealed but not yet in a confirmed anchor (set when anchoring runs)",
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
        # Alerts (gateway/alerts/): the evaluator's passes and the notification outbox.
        self.alert_entries = Counter(
            "patio_alert_entries_evaluated_total",
            "Log entries the alert evaluator has gone past (read, or skipped: no rule for them)",
            registry=self.registry,
        )
        self.alert_evaluation = Histogram(
            "patio_alert_evaluation_seconds", "Time of one evaluation pass", registry=self.registry
        )
        self.alert_behind = Gauge(
            "patio_alert_behind_entries",
            "Log entries committed that the alert evaluator had not yet read at its last pass",
            registry=self.registry,
        )
        self.alert_cpu = Counter(
            "patio_alert_cpu_seconds",
            "CPU time of the alert evaluator's thread: its passes and its deliveries",
            registry=self.registry,
        )
        self.alert_changes = Counter(
            "patio_alert_state_changes_total",
            "Alert state changes by new state",
            ["state"],
            registry=self.registry,
        )
        self.alert_deliveries = Counter(
            "patio_alert_deliveries_total",
            "Notification attempts by channel and outcome (sent, retry, failed)",
            ["channel", "outcome"],
            registry=self.registry,
        )
        self.alert_outbox = Gauge(
            "patio_alert_outbox_pending",
            "Notifications waiting to be sent or retried",
            registry=self.registry,
        )
