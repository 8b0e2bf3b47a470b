"""Prometheus metrics of the hub: outcomes, latencies, issuer state, audit commits."""

from __future__ import annotations

import logging
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from txverify.errors import Reason
from txverify.hub.outcome import Verification

log = logging.getLogger(__name__)
# Latency buckets from 0.5 ms (the hub's own overhead) to 10 s (past any deadline).
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
NOT_FOUND = Reason.SLIP_NOT_FOUND.value
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


_LE = {bound: floatToGoString(bound) for bound in (*LATENCY_BUCKETS, float("inf"))}  # type: ignore[no-untyped-call]


class _Latencies:
    """A latency histogram as plain counters: one per bucket (the last is +Inf) and a sum."""

    __slots__ = ("counts", "created", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.total = 0.0
        self.created = time.time()

    def family_samples(self) -> tuple[list[tuple[str, float]], float]:
        counts = list(self.counts)  # one C-level copy: consistent under the GIL
        total, cumulative, buckets = self.total, 0, []
        for bound, count in zip((*LATENCY_BUCKETS, float("inf")), counts, strict=True):
            cumulative += count
            buckets.append((_LE[bound], float(cumulative)))
        return buckets, total


class _VerifyCollector(Collector):
    """The Verify outcomes and latencies, counted on the event loop as plain integers and
    made into Prometheus families only when scraped.

    prometheus_client's Counter and Histogram take a lock and search the buckets
    in Python at every observation (three per Verify); these cost a bisect and
    three additions. The families are those the client library would expose.
    """

    def __init__(self) -> None:
        self.created = time.time()
        self.outcomes: dict[tuple[str, str], int] = {}
        self.latency = _Latencies()
        self.per_issuer: dict[str, _Latencies] = {}
        # requester member -> [Verify calls admitted, of which SLIP_NOT_FOUND]: a member
        # probing with made-up transRefs shows as a high not-found share.
        self.per_member: dict[str, list[int]] = {}

    def collect(self) -> Iterator[Any]:
        outcomes = CounterMetricFamily(
            "txverify_verify",
            "Verify answers by gRPC status and reason",
            labels=["status", "reason"],
            created=self.created,
        )
        for (status, reason), count in list(self.outcomes.items()):
            outcomes.add_metric([status, reason], count, created=self.created)
        yield outcomes
        latency = HistogramMetricFamily("txverify_verify_seconds", "Verify latency, all issuers")
        buckets, total = self.latency.family_samples()
        latency.add_metric([], buckets, total)
        yield latency
        yield GaugeMetricFamily(
            "txverify_verify_seconds_created", "Verify latency, all issuers", value=self.created
        )
        per_issuer = HistogramMetricFamily(
            "txverify_verify_issuer_seconds", "Verify latency per issuer", labels=["issuer"]
        )
        created = GaugeMetricFamily(
            "txverify_verify_issuer_seconds_created", "Verify latency per issuer", labels=["issuer"]
        )
        for issuer, latencies in list(self.per_issuer.items()):
            buckets, total = latencies.family_samples()
            per_issuer.add_metric([issuer], buckets, total)
            created.add_metric([issuer], latencies.created)
        yield per_issuer
        yield created
        calls = CounterMetricFamily(
            "txverify_member_verify",
            "Verify calls per requester member (admitted: answered or failed after admission)",
            labels=["member"],
        )
        not_found = CounterMetricFamily(
            "txverify_member_not_found",
            "SLIP_NOT_FOUND answers per requester member",
            labels=["member"],
        )
        for member, (total, missed) in list(self.per_member.items()):
            calls.add_metric([member], total)
            not_found.add_metric([member], missed)
        yield calls
        yield not_found


class Metrics:
    """The hub's metrics in their own registry (several hubs may share a process in tests)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._verify = _VerifyCollector()
        self.registry.register(self._verify)
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

    def watch_issuers(self, state: IssuerState) -> None:
        self.registry.register(_IssuerCollector(state))

    def verified(self, v: Verification) -> None:
        """One answered Verify (an Observer of the Router)."""
        stats = self._verify
        key = (v.status, v.reason)
        stats.outcomes[key] = stats.outcomes.get(key, 0) + 1
        if v.requester:
            counts = stats.per_member.get(v.requester) or stats.per_member.setdefault(
                v.requester, [0, 0]
            )
            counts[0] += 1
            if v.reason == NOT_FOUND:
                counts[1] += 1
        seconds = v.elapsed
        bucket = bisect_left(LATENCY_BUCKETS, seconds)  # le: a value on a bound counts in it
        latency = stats.latency
        latency.counts[bucket] += 1
        latency.total += seconds
        if v.issuer:
            latency = stats.per_issuer.get(v.issuer) or stats.per_issuer.setdefault(
                v.issuer, _Latencies()
            )
            latency.counts[bucket] += 1
            latency.total += seconds

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
