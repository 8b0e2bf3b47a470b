"""Prometheus metrics of the hub: outcomes, latencies, issuer state, audit commits."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)
# Latency buckets from 0.5 ms (the hub's own overhead) to 10 s (past any deadline).
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
CIRCUIT_VALUES = {"CLOSED": 0, "HALF_OPEN": 1, "OPEN": 2}
IssuerState = Callable[[], list[tuple[str, int, str | None]]]  # (issuer, in flight, circuit)


class _IssuerCollector(Collector):
    """In-flight inquiries and circuit state per issuer, read at scrape time."""

    def __init__(self, state: IssuerState) -> None:
        self.state = state

    def collect(self) -> Iterator[Any]:
        in_flight = GaugeMetricFamily(
            "txverify_issuer_in_flight", "Inquiries in flight per issuer", labels=["issuer"]
        )
        circuit = GaugeMetricFamily(
            "txverify_issuer_circuit_state",
            "Circuit to each issuer: 0 closed, 1 half-open, 2 open",
            labels=["issuer"],
        )
        for issuer, flying, state in self.state():
            in_flight.add_metric([issuer], flying)
            if state is not None:
                circuit.add_metric([issuer], CIRCUIT_VALUES.get(state, 0))
        yield in_flight
        yield circuit


class Metrics:
    """The hub's metrics in their own registry (several hubs may share a process in tests)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._outcomes = Counter(
            "txverify_verify",
            "Verify answers by gRPC status and reason",
            ["status", "reason"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "txverify_verify_seconds",
            "Verify latency, all issuers",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._issuer_latency = Histogram(
            "txverify_verify_issuer_seconds",
            "Verify latency per issuer",
            ["issuer"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._batch = Histogram(
            "txverify_audit_batch_records",
            "Audit records per group commit",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self._commit = Histogram(
            "txverify_audit_commit_seconds",
            "Time to write and commit one audit batch",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

        self._outcome_children: dict[tuple[str, str], Any] = {}
        self._issuer_children: dict[str, Any] = {}

    def watch_issuers(self, state: IssuerState) -> None:
        self.registry.register(_IssuerCollector(state))

    def verified(self, issuer: str, status: str, reason: str, seconds: float) -> None:
        # labels() takes a lock and builds a key at every call; its children are cached here.
        outcome = self._outcome_children.get((status, reason))
        if outcome is None:
            outcome = self._outcome_children[status, reason] = self._outcomes.labels(status, reason)
        outcome.inc()
        self._latency.observe(seconds)
        if issuer:
            latency = self._issuer_children.get(issuer)
            if latency is None:
                latency = self._issuer_children[issuer] = self._issuer_latency.labels(issuer)
            latency.observe(seconds)

    def audit_batch(self, records: int, seconds: float) -> None:
        self._batch.observe(records)
        self._commit.observe(seconds)

    def serve(self, port: int, host: str = "127.0.0.1") -> Callable[[], None]:
        """Expose /metrics over HTTP (0 picks a free port); returns (port, stop)."""
        server, thread = start_http_server(port, addr=host, registry=self.registry)
        self.port: int = server.server_address[1]
        log.info("metrics on http://%s:%d/metrics", host, self.port)

        def stop() -> None:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)

        return stop
