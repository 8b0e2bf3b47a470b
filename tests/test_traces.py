"""Traces: a caller's W3C traceparent reaches the issuer (same trace, the hub's parent id), is in
the log line and the audit record; OpenTelemetry spans reach an OTLP collector when one is set."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from conftest import HubFactory, logged, member_channel, members_file, start_hub_process
from txverify.hub.app import RunningHub
from txverify.hub.audit import AuditFilter
from txverify.hub.audit.stores import open_audit_store
from txverify.hub.identity import verify_headers
from txverify.hub.schema import AUDIT, migrate_postgres, migrate_sqlite
from txverify.hub.settings import HubSettings
from txverify.hub.tracing import TraceContext, parse, valid_tracestate
from txverify.runtime import tls
from txverify.runtime.storage import connect_sqlite, sqlite_path
from txverify.simulators.bank import SlipVisibility
from txverify.simulators.server import RunningSimulator
from txverify.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    common_pb2,
    verification_pb2,
    verification_pb2_grpc,
)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
ISSUER = "014"


def visible_qr(sim: RunningSimulator, code: str = ISSUER, nth: int = 0) -> str:
    bank = sim.nodes[code].bank
    visible = [
        s.qr_text
        for s in bank.list_slips(100, None)
        if bank.visibility(s.transaction) is SlipVisibility.VISIBLE
    ]
    return visible[nth]


def received(sim: RunningSimulator, code: str = ISSUER) -> list[str]:
    """The traceparents the issuer received, oldest first."""
    return [traceparent for traceparent, _ in sim.nodes[code].traces]


async def verify(
    port: int, qr: str, *headers: tuple[str, str], request_id: str = ""
) -> verification_pb2.VerifyResponse:
    async with member_channel(port) as channel:
        stub = verification_pb2_grpc.VerificationServiceStub(channel)
        answer: verification_pb2.VerifyResponse = await stub.Verify(
            verification_pb2.VerifyRequest(qr_text=qr, request_id=request_id),
            metadata=headers,
            timeout=10,
        )
        return answer


async def audit_records(port: int, request_id: str) -> list[audit_pb2.AuditRecord]:
    async with member_channel(port, tls.OPERATOR) as channel:
        reply = await audit_pb2_grpc.AuditLogStub(channel).QueryAudit(
            audit_pb2.QueryAuditRequest(request_id=request_id), timeout=10
        )
    return list(reply.records)


def verify_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [line for line in logged(caplog).splitlines() if '"message": "verify"' in line]


# --- the traceparent header ---------------------------------------------------------


def test_a_valid_traceparent_is_read_with_its_tracestate() -> None:
    expected = TraceContext(TRACE_ID, PARENT_ID, "01", "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")

    actual = parse(TRACEPARENT, "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")

    assert expected == actual


@pytest.mark.parametrize(
    "value",
    [
        "",
        f"01-{TRACE_ID}-{PARENT_ID}-01",  # another version
        f"ff-{TRACE_ID}-{PARENT_ID}-01",
        f"00-{'0' * 32}-{PARENT_ID}-01",  # all-zero trace id
        f"00-{TRACE_ID}-{'0' * 16}-01",  # all-zero parent id
        TRACEPARENT.upper(),  # uppercase hex
        f"00-{TRACE_ID[:-1]}-{PARENT_ID}-01",  # a digit short
        f"00-{TRACE_ID}-{PARENT_ID}-1",
        f"00-{TRACE_ID}-{PARENT_ID}-01-extra",
        f" {TRACEPARENT}",
        f"00_{TRACE_ID}_{PARENT_ID}_01",
        f"00-{TRACE_ID[:-1]}g-{PARENT_ID}-01",
        "00-٤bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # a non-ASCII digit
    ],
)
def test_a_malformed_traceparent_is_no_trace(value: str) -> None:
    assert parse(value) is None


@pytest.mark.parametrize(
    "state",
    ["no-equals", "a=b," * 33, "k=" + "v" * 600, "UPPER=1", "a=b\n", "é=1", "a=b=c=d\x7f"],
)
def test_a_bad_tracestate_is_dropped_and_the_traceparent_kept(state: str) -> None:
    expected = TraceContext(TRACE_ID, PARENT_ID, "01", "")

    assert expected == parse(TRACEPARENT, state)


@given(st.text(max_size=80), st.one_of(st.none(), st.text(max_size=80)))
def test_parse_never_raises_and_gives_only_valid_traces(value: str, state: str | None) -> None:
    found = parse(value, state)

    if found is not None:
        assert value == found.traceparent
        assert found.state == "" or valid_tracestate(found.state)


@given(
    st.from_regex(r"[0-9a-f]{32}", fullmatch=True).filter(lambda t: t != "0" * 32),
    st.from_regex(r"[0-9a-f]{16}", fullmatch=True).filter(lambda s: s != "0" * 16),
    st.from_regex(r"[0-9a-f]{2}", fullmatch=True),
)
def test_every_valid_traceparent_reads_back_and_its_child_keeps_trace_and_flags(
    trace_id: str, span_id: str, flags: str
) -> None:
    value = f"00-{trace_id}-{span_id}-{flags}"

    found = parse(value)
    child = found.child() if found is not None else None

    assert found is not None
    assert value == found.traceparent
    assert child is not None
    assert (trace_id, flags) == (child.trace_id, child.flags)
    assert span_id != child.span_id
    assert parse(child.traceparent) == child


class _Metadata:
    """What verify_headers reads of a call: its metadata, as the JSON API gives it (every
    header; gRPC keeps only the last traceparent of a call)."""

    def __init__(self, *metadata: tuple[str, str | bytes]) -> None:
        self.metadata = metadata

    def invocation_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return self.metadata


def test_the_member_and_trace_headers_are_read_in_one_pass() -> None:
    call = _Metadata(
        ("user-agent", "x"), ("traceparent", TRACEPARENT), ("x-member-id", "002"),
        ("tracestate", "a=1"), ("tracestate", "b=2"), ("trace-bin", b"\0"),
    )  # fmt: skip

    assert ("002", TRACEPARENT, "a=1,b=2") == verify_headers(call)  # type: ignore[arg-type]


def test_two_different_traceparents_are_no_trace() -> None:
    call = _Metadata(("traceparent", TRACEPARENT), ("traceparent", f"00-{'1' * 32}-{PARENT_ID}-01"))

    _, traceparent, _ = verify_headers(call)  # type: ignore[arg-type]

    assert parse(traceparent) is None


# --- over gRPC ------------------------------------------------------------------------


async def test_a_traceparent_over_grpc_reaches_the_issuer_with_the_hubs_parent_id(
    hub: RunningHub, simulator: RunningSimulator
) -> None:
    answer = await verify(hub.port, visible_qr(simulator), ("traceparent", TRACEPARENT))

    assert verification_pb2.VERDICT_VALID == answer.verdict
    (sent,) = received(simulator)
    version, trace_id, parent_id, flags = sent.split("-")
    assert ("00", TRACE_ID, "01") == (version, trace_id, flags)
    assert PARENT_ID != parent_id
    assert parse(sent) is not None


async def test_the_trace_id_is_in_the_log_line_and_the_audit_record(
    hub: RunningHub, simulator: RunningSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="txverify.hub.verification")

    await verify(hub.port, visible_qr(simulator), ("traceparent", TRACEPARENT), request_id="t-1")

    (line,) = verify_lines(caplog)
    assert f'"trace_id": "{TRACE_ID}"' in line
    assert [TRACE_ID] == [r.trace_id for r in await audit_records(hub.port, "t-1")]


async def test_a_failed_verify_keeps_its_trace_id_too(
    hub: RunningHub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="txverify.hub.verification")

    with pytest.raises(grpc.aio.AioRpcError):
        await verify(hub.port, "not a slip", ("traceparent", TRACEPARENT), request_id="t-bad")

    (line,) = verify_lines(caplog)
    assert f'"trace_id": "{TRACE_ID}"' in line
    assert '"status": "INVALID_ARGUMENT"' in line
    assert [TRACE_ID] == [r.trace_id for r in await audit_records(hub.port, "t-bad")]


async def test_the_callers_tracestate_is_passed_on(
    hub: RunningHub, simulator: RunningSimulator
) -> None:
    await verify(
        hub.port,
        visible_qr(simulator),
        ("traceparent", TRACEPARENT),
        ("tracestate", "congo=t61rcWkgMzE"),
    )

    assert ["congo=t61rcWkgMzE"] == [state for _, state in simulator.nodes[ISSUER].traces]


async def test_without_a_traceparent_nothing_is_sent_logged_or_recorded(
    hub: RunningHub, simulator: RunningSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="txverify.hub.verification")

    await verify(hub.port, visible_qr(simulator), request_id="t-none")

    assert [] == received(simulator)
    (line,) = verify_lines(caplog)
    assert "trace_id" not in line
    assert [""] == [r.trace_id for r in await audit_records(hub.port, "t-none")]


@pytest.mark.parametrize(
    "headers",
    [
        (("traceparent", f"00-{'0' * 32}-{PARENT_ID}-01"),),
        (("traceparent", "not a trace"),),
        (("traceparent", TRACEPARENT.upper()),),
        (("tracestate", "congo=t61rcWkgMzE"),),  # a tracestate alone is no trace
    ],
    ids=["zero-trace", "garbage", "uppercase", "tracestate-alone"],
)
async def test_a_malformed_traceparent_is_ignored(
    headers: tuple[tuple[str, str], ...],
    hub: RunningHub,
    simulator: RunningSimulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="txverify.hub.verification")

    answer = await verify(hub.port, visible_qr(simulator), *headers, request_id="t-malformed")

    assert verification_pb2.VERDICT_VALID == answer.verdict
    assert [] == received(simulator)
    assert "trace_id" not in verify_lines(caplog)[0]
    assert [""] == [r.trace_id for r in await audit_records(hub.port, "t-malformed")]


# --- over the JSON API ----------------------------------------------------------------


async def test_a_traceparent_over_the_json_api_reaches_the_issuer_and_the_audit(
    hub_factory: HubFactory, simulator: RunningSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="txverify.hub.verification")
    hub = await hub_factory(json_port=0)
    assert hub.json_api is not None
    headers = {"content-type": "application/json", "x-member-id": "002"}

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.json_api.port}") as client:
        response = await client.post(
            "/txverify.v1.VerificationService/Verify",
            json={"qrText": visible_qr(simulator), "requestId": "t-json"},
            headers={**headers, "traceparent": TRACEPARENT},
            timeout=10,
        )

    assert 200 == response.status_code
    (sent,) = received(simulator)
    assert (TRACE_ID, "01") == (sent.split("-")[1], sent.split("-")[3])
    assert PARENT_ID != sent.split("-")[2]
    assert f'"trace_id": "{TRACE_ID}"' in verify_lines(caplog)[0]
    assert [TRACE_ID] == [r.trace_id for r in await audit_records(hub.port, "t-json")]


# --- the audit column -----------------------------------------------------------------


def _audit_v1(url: str) -> None:
    """A database with the audit schema as it was before trace ids (migration 1), one row."""
    row = (1_700_000_000_000_000, "old-1", "002", "", "014", "REF1", "OK", "", 1, 900, 0)
    insert = (
        "INSERT INTO audit (at, request_id, requester, requester_reference, issuer, trans_ref, "
        "status, reason, verdict, latency_us, replayed) VALUES ({})"
    )
    if url.startswith("sqlite:"):
        conn = connect_sqlite(url).conn
        try:
            migrate_sqlite(conn, "audit", AUDIT[:1])
            with conn:
                conn.execute(insert.format(", ".join("?" * len(row))), row)
        finally:
            conn.close()
        return
    with psycopg.connect(url, autocommit=True) as pg:
        migrate_postgres(pg, "audit", AUDIT[:1])
        pg.execute(insert.format(", ".join(["%s"] * len(row))).encode(), row)


def test_an_audit_from_before_trace_ids_is_migrated_and_its_rows_have_none(
    durable_url: str,
) -> None:
    _audit_v1(durable_url)

    store = open_audit_store(durable_url)
    try:
        (entry,) = store.query(AuditFilter())
    finally:
        store.close()

    assert ("old-1", "") == (entry.request_id, entry.trace_id)


def test_the_trace_id_migration_is_recorded_once(durable_url: str) -> None:
    open_audit_store(durable_url).close()
    open_audit_store(durable_url).close()  # reopened: nothing to do

    if durable_url.startswith("sqlite:"):
        with contextlib.closing(sqlite3.connect(str(sqlite_path(durable_url)))) as conn:
            versions = conn.execute(
                "SELECT version FROM schema_migrations WHERE component = 'audit'"
            ).fetchall()
    else:
        with psycopg.connect(durable_url) as pg:
            versions = pg.execute(
                "SELECT version FROM schema_migrations WHERE component = 'audit'"
            ).fetchall()
    assert [(1,), (2,)] == sorted(versions)


# --- OpenTelemetry ---------------------------------------------------------------------


@dataclass
class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC collector on loopback (any port) that keeps every span it is sent."""

    port: int = 0
    spans: list[Any] = field(default_factory=list)  # opentelemetry.proto.trace.v1 Span
    arrived: threading.Event = field(default_factory=threading.Event)

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                self.spans.extend(scope.spans)
        self.arrived.set()
        return trace_service_pb2.ExportTraceServiceResponse()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def named(self, name: str) -> list[Any]:
        return [s for s in self.spans if s.name == name]


@contextlib.contextmanager
def otlp_collector() -> Iterator[Collector]:
    # A thread pool server, not one on the test's loop: the hub's exporter thread calls
    # it while the loop may be waiting for the hub to stop.
    collector = Collector()
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(  # type: ignore[no-untyped-call]
        collector, server
    )
    collector.port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield collector
    finally:
        server.stop(grace=None)


@pytest.fixture
def collector() -> Iterator[Collector]:
    with otlp_collector() as running:
        yield running


def attributes(span: Any) -> dict[str, Any]:
    return {a.key: getattr(a.value, a.value.WhichOneof("value")) for a in span.attributes}


@pytest.fixture
async def traced_hub(hub_factory: HubFactory, collector: Collector) -> RunningHub:
    return await hub_factory(otlp_endpoint=collector.endpoint)


async def test_with_an_otlp_endpoint_verify_and_issuer_inquiry_spans_arrive_parented(
    traced_hub: RunningHub, collector: Collector, simulator: RunningSimulator
) -> None:
    await verify(traced_hub.port, visible_qr(simulator), ("traceparent", TRACEPARENT))
    await traced_hub.stop(grace=0)  # exports what is queued

    (verify_span,) = collector.named("Verify")
    (inquiry,) = collector.named("IssuerInquiry")
    assert (TRACE_ID, PARENT_ID) == (verify_span.trace_id.hex(), verify_span.parent_span_id.hex())
    assert (TRACE_ID, verify_span.span_id) == (inquiry.trace_id.hex(), inquiry.parent_span_id)
    # The issuer's parent is the hub's IssuerInquiry span.
    assert [f"00-{TRACE_ID}-{inquiry.span_id.hex()}-01"] == received(simulator)


async def test_the_spans_say_who_and_what_came_of_it_and_nothing_personal(
    traced_hub: RunningHub, collector: Collector, simulator: RunningSimulator
) -> None:
    qr = visible_qr(simulator)
    await verify(traced_hub.port, qr, ("traceparent", TRACEPARENT))
    await traced_hub.stop(grace=0)

    (verify_span,) = collector.named("Verify")
    (inquiry,) = collector.named("IssuerInquiry")
    assert {
        "rpc.system": "grpc", "rpc.service": "txverify.v1.VerificationService",
        "rpc.method": "Verify", "txverify.member": "002", "txverify.issuer": ISSUER,
        "txverify.status": "OK", "txverify.verdict": "VALID",
    } == attributes(verify_span)  # fmt: skip
    assert {
        "rpc.system": "grpc", "rpc.service": "txverify.v1.IssuerService",
        "rpc.method": "IssuerInquiry", "txverify.member": "002", "txverify.issuer": ISSUER,
        "txverify.status": "OK",
    } == attributes(inquiry)  # fmt: skip
    assert (2, 3) == (verify_span.kind, inquiry.kind)  # SERVER, CLIENT
    trans_ref = simulator.nodes[ISSUER].bank.list_slips(100, None)[0].transaction.trans_ref
    assert trans_ref[4:] not in str(collector.spans)


async def test_a_failed_inquiry_is_an_error_span(
    traced_hub: RunningHub, collector: Collector, simulator: RunningSimulator
) -> None:
    unknown = common_pb2.SlipRef(sending_bank=ISSUER, trans_ref="20260101014NOSUCHREF12345")

    async with member_channel(traced_hub.port) as channel:
        with pytest.raises(grpc.aio.AioRpcError):
            await verification_pb2_grpc.VerificationServiceStub(channel).Verify(
                verification_pb2.VerifyRequest(slip_ref=unknown),
                metadata=(("traceparent", TRACEPARENT),),
                timeout=10,
            )
    await traced_hub.stop(grace=0)

    (inquiry,) = collector.named("IssuerInquiry")
    (verify_span,) = collector.named("Verify")
    assert ("NOT_FOUND", "SLIP_NOT_FOUND") == (
        attributes(inquiry)["txverify.status"],
        attributes(inquiry)["txverify.reason"],
    )
    assert 2 == inquiry.status.code  # ERROR: a client span's failed call
    assert 0 == verify_span.status.code  # UNSET: not found is an answer, not the hub's fault


async def test_with_tracing_on_a_request_without_traceparent_starts_a_trace(
    traced_hub: RunningHub, collector: Collector, simulator: RunningSimulator
) -> None:
    await verify(traced_hub.port, visible_qr(simulator), request_id="t-root")
    records = await audit_records(traced_hub.port, "t-root")
    await traced_hub.stop(grace=0)

    (verify_span,) = collector.named("Verify")
    (inquiry,) = collector.named("IssuerInquiry")
    trace_id = verify_span.trace_id.hex()
    assert (b"", trace_id) == (verify_span.parent_span_id, inquiry.trace_id.hex())
    assert [trace_id] == [r.trace_id for r in records]
    (sent,) = received(simulator)
    assert (trace_id, inquiry.span_id.hex()) == (sent.split("-")[1], sent.split("-")[2])


async def test_with_tracing_on_the_callers_tracestate_reaches_the_spans(
    traced_hub: RunningHub, collector: Collector, simulator: RunningSimulator
) -> None:
    await verify(
        traced_hub.port,
        visible_qr(simulator),
        ("traceparent", TRACEPARENT),
        ("tracestate", "congo=t61rcWkgMzE"),
    )
    await traced_hub.stop(grace=0)

    (verify_span,) = collector.named("Verify")
    assert "congo=t61rcWkgMzE" == verify_span.trace_state


async def test_an_unsampled_callers_trace_is_passed_on_with_no_spans_exported(
    traced_hub: RunningHub, collector: Collector, simulator: RunningSimulator
) -> None:
    await verify(traced_hub.port, visible_qr(simulator), ("traceparent", TRACEPARENT[:-2] + "00"))
    await traced_hub.stop(grace=0)

    assert [] == collector.spans
    (sent,) = received(simulator)
    assert (TRACE_ID, "00") == (sent.split("-")[1], sent.split("-")[3])


def test_an_otlp_endpoint_must_be_an_http_url() -> None:
    with pytest.raises(ValueError, match="OTLP endpoint"):
        HubSettings(otlp_endpoint="127.0.0.1:4317")


# --- processes ------------------------------------------------------------------------


@pytest.mark.slow
def test_a_hub_without_an_otlp_endpoint_loads_no_tracing_code() -> None:
    # redis imports OpenTelemetry's metrics SDK (and with it opentelemetry.trace) when the
    # SDK is installed, for its own metrics: not the hub's doing, and no per-request cost.
    # What the hub would load for spans is its otel module, the SDK's tracing, the exporter.
    script = (
        "import asyncio, sys\n"
        "from txverify.hub.app import start_hub\n"
        "from txverify.hub.settings import HubSettings\n"
        "async def main():\n"
        "    hub = await start_hub(HubSettings(port=0))\n"
        "    await hub.stop(grace=0)\n"
        "asyncio.run(main())\n"
        "print(sorted(m for m in sys.modules if m.startswith(('txverify.hub.otel', "
        "'opentelemetry.sdk.trace', 'opentelemetry.exporter'))))\n"
    )

    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )

    assert "[]" == out.stdout.strip()


@pytest.mark.slow
async def test_txverify_hub_otlp_endpoint_exports_the_spans(
    simulator: RunningSimulator, collector: Collector, tmp_path: Path
) -> None:
    members = members_file(simulator, tmp_path)
    proc, port = await start_hub_process(members, "--otlp-endpoint", collector.endpoint)
    try:
        await verify(port, visible_qr(simulator), ("traceparent", TRACEPARENT))
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)

    assert 0 == proc.returncode
    assert {"Verify", "IssuerInquiry"} == {s.name for s in collector.spans}
    assert {TRACE_ID} == {s.trace_id.hex() for s in collector.spans}
