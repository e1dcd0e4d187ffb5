"""Prometheus metrics of the service (exposed on ``/metrics``)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram


class ServiceMetrics:
    """One registry per app instance, so tests and multiple apps in one process do not collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._request_children: dict[tuple[str, int], tuple[Any, Any]] = {}
        self._children: dict[tuple[str, ...], Any] = {}
        self.requests = Counter(
            "recstack_http_requests_total", "HTTP requests by route and status", ["route", "status"],
            registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "recstack_http_request_seconds", "HTTP request latency by route", ["route"], registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )  # fmt: skip
        self.candidates = Counter(
            "recstack_recall_candidates_total", "Candidates returned per recall channel", ["channel"],
            registry=self.registry,
        )  # fmt: skip
        self.fallbacks = Counter(
            "recstack_fallback_total", "Requests served by a fallback", ["reason"], registry=self.registry
        )
        self.events = Counter(
            "recstack_events_published_total", "Events published to the bus", registry=self.registry
        )
        self.spooled = Counter(
            "recstack_events_spooled_total", "Events spooled to disk while the bus was down", registry=self.registry
        )
        self.stage_latency = Histogram(
            "recstack_stage_seconds", "Latency of each pipeline stage", ["stage"], registry=self.registry,
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1),
        )  # fmt: skip
        self.channel_status = Counter(
            "recstack_recall_channel_total", "Recall channel outcomes (ok, empty, timeout, error)",
            ["channel", "status"], registry=self.registry,
        )  # fmt: skip
        self.errors = Counter(
            "recstack_errors_total", "Unexpected errors by stage (the request was still served)", ["stage"],
            registry=self.registry,
        )  # fmt: skip
        self.reloads = Counter(
            "recstack_model_reload_total", "Release reload outcomes (reloaded, refused, source_error)",
            ["outcome"], registry=self.registry,
        )  # fmt: skip

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        key = (route, status)
        children = self._request_children.get(key)
        if children is None:
            children = (self.latency.labels(route), self.requests.labels(route, str(status)))
            self._request_children[key] = children
        children[0].observe(seconds)
        children[1].inc()

    def observe_recommendation(self, stages: dict[str, float], channels: list[tuple[str, str, int]]) -> None:
        """Stage latencies and (channel, status, candidates) of one request, with cached label children."""
        cache = self._children
        for stage, seconds in stages.items():
            child = cache.get(("stage", stage))
            if child is None:
                child = cache[("stage", stage)] = self.stage_latency.labels(stage)
            child.observe(seconds)
        for name, status, n in channels:
            child = cache.get(("status", name, status))
            if child is None:
                child = cache[("status", name, status)] = self.channel_status.labels(name, status)
            child.inc()
            child = cache.get(("cands", name))
            if child is None:
                child = cache[("cands", name)] = self.candidates.labels(name)
            child.inc(n)
