"""Prometheus metrics of the service (exposed on ``/metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class ServiceMetrics:
    """One registry per app instance, so tests and multiple apps in one process do not collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "recstack_http_requests_total", "HTTP requests by route and status", ["route", "status"],
            registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "recstack_http_request_seconds", "HTTP request latency by route", ["route"], registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )  # fmt: skip
        self.candidates = Counter(
            "recstack_recall_candidates_total", "Items returned per recall channel", ["channel"],
            registry=self.registry,
        )  # fmt: skip
        self.fallbacks = Counter(
            "recstack_fallback_total", "Requests served by a fallback", ["reason"], registry=self.registry
        )
        self.events = Counter(
            "recstack_events_published_total", "Events published to the bus", registry=self.registry
        )
