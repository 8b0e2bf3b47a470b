"""OpenTelemetry spans of Verify and IssuerInquiry, exported over OTLP: only when configured.

Imported only when `HubSettings.otlp_endpoint` is set (app.py), from the `otel`
extra (`pip install 'txverify[otel]'`): a hub without an endpoint imports no
OpenTelemetry tracing code and pays nothing per request. Each hub has a
TracerProvider of its own (not the global one): tests start several hubs in one
process, and a forked worker builds its own after the fork, as it builds
everything of gRPC.

Spans carry member codes, the outcome and gRPC names, never personal data or a
transRef: "Verify" (SERVER), parented on the caller's traceparent when it sent
one, else a root; "IssuerInquiry" (CLIENT), its child, whose span id is the
parent id the issuer receives.
"""

from __future__ import annotations

import asyncio
from typing import cast

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from txverify.hub.outcome import Verification
from txverify.hub.tracing import TraceContext
from txverify.v1 import issuer_pb2, verification_pb2

# Seconds an export may take (with the exporter's retries) before its spans are
# dropped; also bounds how long a stopping hub waits for an unreachable collector.
EXPORT_TIMEOUT = 5.0
_VERIFY_SERVICE = verification_pb2.DESCRIPTOR.services_by_name["VerificationService"].full_name
_ISSUER_SERVICE = issuer_pb2.DESCRIPTOR.services_by_name["IssuerService"].full_name
# gRPC statuses that make a server span an error (OpenTelemetry's RPC conventions):
# the server's fault, not the caller's (a slip not found is an answer).
_SERVER_ERRORS = frozenset(
    {"UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS"}
)


def _remote(caller: TraceContext) -> Context:
    """The caller's span as the parent context of the Verify span."""
    span_context = trace.SpanContext(
        trace_id=int(caller.trace_id, 16),
        span_id=int(caller.span_id, 16),
        is_remote=True,
        trace_flags=trace.TraceFlags(int(caller.flags, 16)),
        trace_state=trace.TraceState.from_header([caller.state]) if caller.state else None,
    )
    return trace.set_span_in_context(trace.NonRecordingSpan(span_context))


def _context_of(span: trace.Span, flags: str | None, state: str) -> TraceContext:
    ctx = span.get_span_context()
    return TraceContext(
        trace.format_trace_id(ctx.trace_id),
        trace.format_span_id(ctx.span_id),
        flags if flags is not None else f"{int(ctx.trace_flags):02x}",
        state,
    )


class Spans:
    """The hub's tracer: starts and ends the two spans of a Verify, exports in batches."""

    def __init__(self, endpoint: str, *, exporter: SpanExporter | None = None) -> None:
        self.endpoint = endpoint
        self.provider = TracerProvider(resource=Resource.create({"service.name": "txverify-hub"}))
        # Spans are queued on the loop and exported by the processor's thread, in
        # batches (OTEL_BSP_* set the queue and the batch size).
        self.provider.add_span_processor(
            BatchSpanProcessor(
                exporter or OTLPSpanExporter(endpoint=endpoint, timeout=EXPORT_TIMEOUT)
            )
        )
        self.tracer = self.provider.get_tracer("txverify.hub")

    def verify_started(self, v: Verification, caller: TraceContext | None) -> None:
        """Start the Verify span; v.trace becomes its context (the caller's trace id and
        flags, or a new trace when the caller sent none)."""
        span = self.tracer.start_span(
            "Verify",
            context=None if caller is None else _remote(caller),
            kind=SpanKind.SERVER,
            attributes={
                "rpc.system": "grpc",
                "rpc.service": _VERIFY_SERVICE,
                "rpc.method": "Verify",
            },
        )
        v.span = span
        if caller is None:
            v.trace = _context_of(span, None, "")
        else:
            v.trace = _context_of(span, caller.flags, caller.state)

    def verify_ended(self, v: Verification) -> None:
        span = cast(trace.Span, v.span)
        attributes: dict[str, str | bool] = {"txverify.status": v.status}
        if v.requester:
            attributes["txverify.member"] = v.requester
        if v.issuer:
            attributes["txverify.issuer"] = v.issuer
        if v.reason:
            attributes["txverify.reason"] = v.reason
        if v.status == "OK":
            attributes["txverify.verdict"] = v.verdict_name
        if v.replayed:
            attributes["txverify.replayed"] = True
        span.set_attributes(attributes)
        if v.status in _SERVER_ERRORS:
            span.set_status(Status(StatusCode.ERROR, v.reason))
        span.end()

    def verify_abandoned(self, v: Verification) -> None:
        """The Verify was cancelled (its caller went away) before an outcome."""
        span = cast(trace.Span, v.span)
        span.set_attribute("txverify.status", "CANCELLED")
        span.end()

    def inquiry_started(self, v: Verification, issuer: str) -> tuple[trace.Span, TraceContext]:
        """Start the IssuerInquiry span under the Verify span; the trace to send the issuer:
        its span id as the parent id, the flags and tracestate as the caller sent them."""
        assert v.trace is not None  # set by verify_started
        span = self.tracer.start_span(
            "IssuerInquiry",
            context=trace.set_span_in_context(cast(trace.Span, v.span)),
            kind=SpanKind.CLIENT,
            attributes={
                "rpc.system": "grpc",
                "rpc.service": _ISSUER_SERVICE,
                "rpc.method": "IssuerInquiry",
                "txverify.member": v.requester,
                "txverify.issuer": issuer,
            },
        )
        return span, _context_of(span, v.trace.flags, v.trace.state)

    def inquiry_ended(self, span: trace.Span, status: str, reason: str) -> None:
        """End the IssuerInquiry span: `status` the hub's gRPC status name of the outcome
        ("OK" for a transaction), `reason` its txverify reason."""
        span.set_attribute("txverify.status", status)
        if reason:
            span.set_attribute("txverify.reason", reason)
        if status != "OK":  # a client span: any failure of the call is an error
            span.set_status(Status(StatusCode.ERROR, reason))
        span.end()

    async def close(self) -> None:
        """Export what is queued and stop (in a thread: it waits on the collector)."""
        await asyncio.to_thread(self.provider.shutdown)
