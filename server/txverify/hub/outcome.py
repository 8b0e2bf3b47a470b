"""One Verify as the hub handled it, and who is told: the log line, metrics, the console.

The Router fills a `Verification` as the request goes (who asked, which slip,
what came of it) and, once the answer is durable, hands it to each observer.
Nothing here is personal: member codes, the request's ids (and its trace's),
the slip's reference, the outcome and the latency.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from txverify.hub.tracing import TraceContext
from txverify.runtime import logs
from txverify.v1 import verification_pb2

_VERDICTS: dict[int, str] = {
    int(value): name.removeprefix("VERDICT_") for name, value in verification_pb2.Verdict.items()
}


@dataclass(slots=True)
class Verification:
    """What one Verify learnt on its way; the audit entry, the log line and metrics read it."""

    started: float  # time.perf_counter() when it arrived
    caller: str = ""  # the identity it called with (certificate or header), at most 64
    requester: str = ""  # the member code, once admitted
    request_id: str = ""
    reference: str = ""  # requester_reference
    issuer: str = ""
    trans_ref: str = ""
    status: str = "OK"  # gRPC status name
    reason: str = ""  # txverify.errors.Reason value for a failure
    verdict: int = 0  # verification_pb2.Verdict value of an answer
    replayed: bool = False
    ended: float = 0.0  # time.time() when answered
    elapsed: float = 0.0  # seconds from arrival to answer
    # The caller's span as its traceparent named it (tracing.py), None when it sent none;
    # with OpenTelemetry on, the hub's Verify span (txverify.hub.otel; a new trace when
    # the caller sent none), which `span` then is.
    trace: TraceContext | None = None
    span: object | None = None

    @property
    def trace_id(self) -> str:
        return "" if self.trace is None else self.trace.trace_id

    @property
    def verdict_name(self) -> str:
        return _VERDICTS.get(self.verdict, str(self.verdict))


class Observer(Protocol):
    """Told of every answered Verify, on the event loop: keep it to microseconds."""

    def verified(self, v: Verification) -> None: ...


class Observers:
    """Several observers as one."""

    def __init__(self, observers: Sequence[Observer]) -> None:
        self.observers = tuple(observers)

    def verified(self, v: Verification) -> None:
        for observer in self.observers:
            observer.verified(v)


class RequestLog:
    """One log line per Verify (logger `txverify.hub.verification`, message "verify").

    Under the JSON log of a served hub (txverify.runtime.logs.BufferedStreamHandler) the
    line is formatted by the handler's flusher thread, from the record, not on
    the event loop; elsewhere (a terminal, pytest's capture) it goes through
    `logging` like any line, with the same fields.
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger("txverify.hub.verification")

    def verified(self, v: Verification) -> None:
        logger = self.logger
        if not logger.isEnabledFor(logging.INFO):
            return
        handler = logs.deferring_handler(logger)
        if handler is not None:
            handler.defer(self.json_line, v)
        else:
            logger.info("verify", extra={logs.FIELDS: self.fields(v)})

    @staticmethod
    def fields(v: Verification) -> dict[str, object]:
        fields: dict[str, object] = {"caller": v.caller}
        if v.requester:
            fields["requester"] = v.requester
        if v.request_id:
            fields["request_id"] = v.request_id
            fields["requester_reference"] = v.reference
        if v.trace is not None:
            fields["trace_id"] = v.trace.trace_id
        if v.issuer:
            fields["issuer"] = v.issuer
            fields["trans_ref"] = v.trans_ref
        if v.replayed:
            fields["replayed"] = "true"
        if v.status == "OK":
            fields["verdict"] = v.verdict_name
        fields["status"] = v.status
        fields["reason"] = v.reason
        fields["latency_ms"] = round(v.elapsed * 1000, 2)
        return fields

    def json_line(self, v: Verification) -> str:
        """The line JsonFormatter would write for this record (run in the flusher thread)."""
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(v.ended, UTC).isoformat(timespec="milliseconds"),
            "level": "INFO",
            "logger": self.logger.name,
            "message": "verify",
        }
        entry.update(self.fields(v))
        return json.dumps(entry, ensure_ascii=False, default=str)
