"""Hostile input against a running hub: whatever a caller sends, never INTERNAL or UNKNOWN.

The hub and the simulated banks run as `txverify up` (real processes, loopback,
port 0); hypothesis generates VerifyRequests: QR texts (random text with control
characters, valid slips with a character changed, dropped or inserted, huge
strings), slip references, request ids and references (any text, overlong),
expectations (amounts from -2^63 to 2^63-1, thousands of receivers, times
outside what a timestamp can hold) and member headers (printable ASCII, any
length). Every answer must be OK or a documented error, the hub must stay up,
its memory must stay bounded (RSS growth under 64 MB), and how many inputs
were tried is printed.

Then every other RPC the hub serves, each field of each request: MemberRegistry
as the operator and as members (codes, names, kinds and statuses as any number,
endpoints, identities, rates as any double, bursts as any uint32, update masks,
reasons), AuditLog as the operator and as members (times outside what a
Timestamp may name, filters of any text, limits over the whole int32 range),
grpc.health.v1 Check and Watch with any service name, and reflection requests of
every kind. There every refusal must be one of txverify's reasons, in ErrorInfo,
with the status code that reason has, a BadRequest naming the field for
INVALID_ARGUMENT and a message that does not quote back what was sent (health's
own NOT_FOUND for a service it does not know is the health protocol's answer).
Registry changes go to members of their own (SCRATCH): the network's members
must come out unchanged, and the hub must still verify a real slip.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import stop_process
from txverify.errors import REASONS, Reason, details_of
from txverify.hub.membership import UPDATABLE
from txverify.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    common_pb2,
    registry_pb2,
    registry_pb2_grpc,
    verification_pb2,
    verification_pb2_grpc,
)

# slow: real processes or long runs; `make test-fast` leaves it out (`make test` runs it).
pytestmark = pytest.mark.slow

EXAMPLES = 600  # 1,000 until `make test` neared 10 minutes; `make fuzz` goes far deeper
# The other RPCs share about as many again (`make fuzz` runs their fuzz targets longer).
REGISTRY_EXAMPLES = 240  # as the operator; members get REGISTRY_MEMBER_EXAMPLES
REGISTRY_MEMBER_EXAMPLES = 40
AUDIT_EXAMPLES = 160
HEALTH_EXAMPLES = 80
REFLECTION_EXAMPLES = 80
OPERATOR = "operator"
# The members `txverify up` registers (clients/txverify/cli/network.py), and members of the
# registry fuzz's own: changes go to SCRATCH only, so the Verify test's members hold.
NETWORK = ("002", "004", "006", "014", "025", "900")
SCRATCH = ("101", "102", "103", "104", "105", "106")
SERVICES = (
    "txverify.v1.VerificationService",
    "txverify.v1.MemberRegistry",
    "txverify.v1.AuditLog",
)
MAX_MESSAGE = 1000  # characters of an error message: more is quoting the request back
MEMBER = "014"
ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAVAILABLE,
}


def _hub_pid(up: int) -> int:
    """The hub process among the children of `txverify up`."""
    for children in Path(f"/proc/{up}/task").glob("*/children"):
        for child in children.read_text().split():
            if b"hub" in Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0"):
                return int(child)
    raise AssertionError("no hub process under txverify up")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


class Hub:
    def __init__(self, address: str, samples: list[str], pid: int) -> None:
        self.pid = pid
        self.address = address
        self.samples = samples
        self.channel = grpc.insecure_channel(
            address, options=[("grpc.max_send_message_length", 8 * 1024 * 1024)]
        )
        self.stub = verification_pb2_grpc.VerificationServiceStub(self.channel)
        self.registry = registry_pb2_grpc.MemberRegistryStub(self.channel)
        self.audit = audit_pb2_grpc.AuditLogStub(self.channel)
        # grpcio-health-checking and grpcio-reflection ship no type stubs.
        self.health: Any = health_pb2_grpc.HealthStub(self.channel)
        self.reflection: Any = reflection_pb2_grpc.ServerReflectionStub(self.channel)
        self.tried = 0
        self.statuses: dict[str, int] = {}
        self.rpcs: dict[str, dict[str, int]] = {}  # the other RPCs: answers by status

    def count(self, rpc: str, code: grpc.StatusCode) -> None:
        answers = self.rpcs.setdefault(rpc, {})
        answers[code.name] = answers.get(code.name, 0) + 1

    def call(self, rpc: str, request: Any, member: str) -> tuple[grpc.StatusCode, Any]:
        """One unary call of MemberRegistry or AuditLog: its answer, or its documented refusal."""
        service = self.audit if rpc == "QueryAudit" else self.registry
        try:
            response = getattr(service, rpc)(
                request, timeout=20, metadata=(("x-member-id", member),)
            )
        except grpc.RpcError as error:
            documented(rpc, error, request)
            self.count(rpc, error.code())
            return error.code(), None
        self.count(rpc, grpc.StatusCode.OK)
        return grpc.StatusCode.OK, response

    def verify(
        self, request: verification_pb2.VerifyRequest, member: str = MEMBER
    ) -> grpc.StatusCode:
        self.tried += 1
        try:
            self.stub.Verify(request, timeout=20, metadata=(("x-member-id", member),))
            code = grpc.StatusCode.OK
        except grpc.RpcError as error:
            code = error.code()
            details = error.details()
            assert code in ALLOWED, f"{code.name}: {details} for {request!r:.500}"
        self.statuses[code.name] = self.statuses.get(code.name, 0) + 1
        return code


def documented(rpc: str, error: grpc.RpcError, request: object) -> None:
    """A refusal as txverify documents them: a reason in ErrorInfo with its own status
    code, a BadRequest for a bad field, a message that does not quote the request."""
    details = details_of(error)
    seen = (
        f"{rpc} {details.status.name} {details.reason!r}: {details.message:.300} "
        f"for {request!r:.300}"
    )
    assert details.reason in Reason.__members__, f"no ErrorInfo: {seen}"
    assert REASONS[Reason(details.reason)].status == details.status, seen
    assert details.status not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), seen
    if details.status is grpc.StatusCode.INVALID_ARGUMENT:
        assert details.violations, f"no BadRequest: {seen}"
    assert len(details.message) <= MAX_MESSAGE, f"message of {len(details.message)}: {seen}"


def _read(proc: subprocess.Popen[str], into: queue.Queue[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        into.put(line)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    network = tmp_path_factory.mktemp("fuzz") / "network.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "txverify.cli",
            "up",
            "--port",
            "0",
            "--console",
            "-1",
            "--json-port",
            "-1",
            "--transactions",
            "50",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "TXVERIFY_NETWORK": str(network)},
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_read, args=(proc, lines), daemon=True).start()
    address, samples = "", []
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                assert proc.poll() is None, "txverify up exited"
                continue
            if found := re.search(r"hub at (\S+)", line):
                address = found[1]
            if found := re.search(r"-m txverify\.cli verify (\S+)", line):
                samples.append(found[1])
            if "Network recorded" in line:
                break
        assert address, "txverify up did not print the hub's address"
        assert samples, "txverify up did not print sample slips"
        running = Hub(address, samples, _hub_pid(proc.pid))
        yield running
        print(f"\nfuzz: {running.tried} inputs tried, answers by status: {running.statuses}")
        for rpc, answers in running.rpcs.items():
            print(f"fuzz: {rpc}: {sum(answers.values())} inputs, answers by status: {answers}")
        running.channel.close()
    finally:
        stop_process(proc, signal.SIGINT)


# A character anywhere in Unicode except surrogates (not encodable in UTF-8), control
# characters included.
_chars = st.characters(exclude_categories=["Cs"])
_text = st.text(_chars, max_size=80) | st.text(_chars, min_size=1000, max_size=5000)
_huge = st.integers(min_value=1, max_value=1_500_000).map(lambda n: "9" * n)
_int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
# Seconds outside 0001-01-01..9999-12-31 and nanos outside 0..999,999,999 too.
_timestamp = st.builds(
    lambda s, n: Timestamp(seconds=s, nanos=n),
    _int64,
    st.integers(min_value=-(2**31), max_value=2**31 - 1),
)


@st.composite
def _mutated(draw: st.DrawFn, samples: list[str]) -> str:
    qr = draw(st.sampled_from(samples))
    i = draw(st.integers(min_value=0, max_value=len(qr)))
    how = draw(st.sampled_from(("replace", "drop", "insert")))
    ch = draw(_chars)
    if how == "replace" and i < len(qr):
        return qr[:i] + ch + qr[i + 1 :]
    if how == "drop":
        return qr[:i] + qr[i + 1 :]
    return qr[:i] + ch + qr[i:]


def _receivers() -> st.SearchStrategy[list[verification_pb2.ReceiverExpectation]]:
    one = st.one_of(
        st.builds(lambda a: verification_pb2.ReceiverExpectation(account=a), _text),
        st.builds(
            lambda t, v: verification_pb2.ReceiverExpectation(
                proxy=common_pb2.Proxy(type=t, value=v)
            ),
            st.integers(min_value=-5, max_value=2**31 - 1),
            _text,
        ),
    )
    return st.lists(one, max_size=5) | st.lists(one, min_size=2000, max_size=3000)


@st.composite
def _expectations(draw: st.DrawFn) -> verification_pb2.Expectations:
    expect = verification_pb2.Expectations()
    for name in ("equals_satang", "at_least_satang", "at_most_satang"):
        if draw(st.booleans()):
            setattr(expect.amount, name, draw(_int64))
    expect.receivers.extend(draw(_receivers()))
    if draw(st.booleans()):
        expect.receiving_bank = draw(_text)
    for name in ("not_before", "not_after"):
        if draw(st.booleans()):
            getattr(expect, name).CopyFrom(draw(_timestamp))
    return expect


@st.composite
def _requests(draw: st.DrawFn, samples: list[str]) -> verification_pb2.VerifyRequest:
    request = verification_pb2.VerifyRequest()
    which = draw(st.sampled_from(("qr", "mutated", "valid", "ref", "huge", "none")))
    if which == "qr":
        request.qr_text = draw(_text)
    elif which == "mutated":
        request.qr_text = draw(_mutated(samples))
    elif which == "valid":
        request.qr_text = draw(st.sampled_from(samples))
    elif which == "huge":
        request.qr_text = draw(_huge)
    elif which == "ref":
        request.slip_ref.sending_bank = draw(_text)
        request.slip_ref.trans_ref = draw(_text)
    if draw(st.booleans()):
        request.request_id = draw(_text)
    if draw(st.booleans()):
        request.requester_reference = draw(_text)
    if draw(st.booleans()):
        request.expect.CopyFrom(draw(_expectations()))
    return request


# Mostly a real member (so that requests get past identity), else anything printable.
_members = st.one_of(
    st.just(MEMBER),
    st.just(MEMBER),
    st.just(MEMBER),
    st.sampled_from(["002", "999", ""]),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=300),
)


@pytest.mark.timeout(300)
def test_no_request_makes_the_hub_fail_inside(hub: Hub) -> None:
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(request=_requests(hub.samples), member=_members)
    def one(request: verification_pb2.VerifyRequest, member: str) -> None:
        hub.verify(request, member.strip() or MEMBER)

    rss_before = _rss_mb(hub.pid)
    one()
    rss_after = _rss_mb(hub.pid)
    print(f"\nfuzz: hub RSS {rss_before:.1f} MB before, {rss_after:.1f} MB after")

    # Memory stays bounded: requests up to 1.5 MB and thousands of receivers leave
    # nothing behind but allocator slack.
    assert rss_after - rss_before < 64
    # Still up, still right: a valid slip verifies.
    assert grpc.StatusCode.OK == hub.verify(verification_pb2.VerifyRequest(qr_text=hub.samples[0]))
    assert hub.tried > EXAMPLES


# --- MemberRegistry, AuditLog, health, reflection ----------------------------------------

_SETTINGS = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Over what one status message can carry back (gRPC refuses trailers over 16 KB).
_big = st.integers(min_value=17_000, max_value=100_000).map(lambda n: "7" * n)
_field = _text | _big
_int32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
_enum = st.integers(min_value=-2, max_value=4) | _int32  # proto3 enums take any int32
_uint32 = st.integers(min_value=0, max_value=2**32 - 1) | st.sampled_from([1_000_000, 1_000_001])
_rate = st.floats() | st.sampled_from(
    [0.0, -0.0, 5e-324, 1e-300, 0.000999, 0.001, 1e6, 1e6 + 0.5, 1e300, float("inf")]
)
_any_code = st.sampled_from(SCRATCH) | st.sampled_from(SCRATCH + NETWORK) | _field
# What a change may name: a scratch member or a code of nobody in the network.
_scratch_code = st.sampled_from(SCRATCH) | _field.filter(lambda c: c not in NETWORK)
_role = st.sampled_from([1, 2]) | _enum
_endpoint = (
    st.sampled_from(["", "127.0.0.1:1", "[::1]:65535", "bank.example:99999", "x:y"]) | _field
)
_identity = st.sampled_from(["", "bank-x.example", OPERATOR, "014", "a" * 64, "a" * 65]) | _field
_valid_stamp = st.builds(
    lambda s, n: Timestamp(seconds=s, nanos=n),
    st.integers(min_value=-62_135_596_800, max_value=253_402_300_799),
    st.integers(min_value=0, max_value=999_999_999),
)
_stamp = _timestamp | _valid_stamp | st.none()


# Per field of a Member: values the hub takes, and values it must refuse (or ignore).
_MEMBER_FIELDS: dict[str, tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]] = {
    "name": (
        st.sampled_from(["", "Bank", "ธนาคาร\nใหม่", "x" * 200]),
        _field | st.sampled_from(["x" * 201, "a\x00b"]),
    ),
    "kind": (st.sampled_from([0, 1, 2]), _enum),
    "issuer_endpoint": (
        st.sampled_from(["", "127.0.0.1:1", "[::1]:65535", "bank.example:80"]),
        _field,
    ),
    "cert_identity": (
        st.sampled_from(["", "bank-x.example", "a" * 64, OPERATOR]),
        _field | st.sampled_from(["014", "a" * 65, "-x", "a b"]),
    ),
    "rate_limit_rps": (st.sampled_from([0.0, 0.001, 2.5, 1e6]), _rate),
    "rate_limit_burst": (st.sampled_from([0, 1, 100, 1_000_000]), _uint32),
    # Output only: whatever they say is not read.
    "status": (_enum, _enum),
    "issuer_circuit": (_enum, _enum),
}


@st.composite
def _member_pb(draw: st.DrawFn, code: st.SearchStrategy[str]) -> registry_pb2.Member:
    """A member with none, one or a few fields hostile, the others as a member has them."""
    hostile = draw(st.sets(st.sampled_from(sorted(_MEMBER_FIELDS)), max_size=3))
    fields: dict[str, Any] = {
        name: draw(bad if name in hostile else good) for name, (good, bad) in _MEMBER_FIELDS.items()
    }
    member = registry_pb2.Member(code=draw(code), **fields)
    member.subscriptions.extend(
        draw(st.lists(st.builds(registry_pb2.Subscription, service=_text, role=_enum), max_size=2))
    )
    for name in ("created_at", "updated_at"):
        stamp = draw(_stamp)
        if stamp is not None:
            getattr(member, name).CopyFrom(stamp)
    return member


_mask = st.builds(
    lambda paths: field_mask_pb2.FieldMask(paths=paths),
    st.lists(st.sampled_from(UPDATABLE), min_size=1, max_size=3)
    | st.lists(
        st.sampled_from([*UPDATABLE, "status", "code", "member.name", ""]) | _field, max_size=4
    ),
)
_service = st.sampled_from(["", "slip-verification"]) | st.just("") | _field
_registry_requests = st.one_of(
    st.tuples(
        st.just("RegisterMember"),
        st.builds(
            registry_pb2.RegisterMemberRequest,
            member=_member_pb(_any_code),
            roles=st.lists(_role, max_size=4),
        ),
    ),
    st.tuples(
        st.just("GetMember"),
        st.builds(registry_pb2.GetMemberRequest, code=_any_code, include_history=st.booleans()),
    ),
    st.tuples(st.just("ListMembers"), st.just(registry_pb2.ListMembersRequest())),
    st.tuples(
        st.just("UpdateMember"),
        st.builds(
            registry_pb2.UpdateMemberRequest,
            code=_scratch_code,
            member=_member_pb(_any_code),
            update_mask=_mask,
        ),
    ),
    st.tuples(
        st.just("SetMemberStatus"),
        st.builds(
            registry_pb2.SetMemberStatusRequest,
            code=_scratch_code,
            status=st.sampled_from([1, 2, 3]) | _enum,
            reason=st.just("") | _field | st.just("a\x00b"),
        ),
    ),
    *(
        st.tuples(
            st.just(rpc),
            st.builds(request, code=_scratch_code, service=_service, role=_role),
        )
        for rpc, request in (
            ("Subscribe", registry_pb2.SubscribeRequest),
            ("Unsubscribe", registry_pb2.UnsubscribeRequest),
        )
    ),
)


def _network(hub: Hub) -> dict[str, registry_pb2.Member]:
    """The network's members as the registry lists them, without the circuit's state."""
    code, reply = hub.call("ListMembers", registry_pb2.ListMembersRequest(), OPERATOR)
    assert grpc.StatusCode.OK == code
    members = {m.code: m for m in reply.members if m.code in NETWORK}
    for member in members.values():
        member.ClearField("issuer_circuit")
    return members


@pytest.mark.timeout(300)
def test_no_registry_request_makes_the_hub_fail_inside(hub: Hub) -> None:
    before = _network(hub)

    @settings(_SETTINGS, max_examples=REGISTRY_EXAMPLES)
    @given(call=_registry_requests)
    def as_operator(call: tuple[str, Any]) -> None:
        rpc, request = call
        code, response = hub.call(rpc, request, OPERATOR)
        if code is grpc.StatusCode.OK and rpc in ("RegisterMember", "UpdateMember"):
            # What was stored is what a Verify's rate limit is made from: in range.
            member = response.member
            assert member.rate_limit_rps == 0 or 0.001 <= member.rate_limit_rps <= 1e6
            assert member.rate_limit_burst <= 1_000_000

    @settings(_SETTINGS, max_examples=REGISTRY_MEMBER_EXAMPLES)
    @given(call=_registry_requests, member=_members)
    def as_member(call: tuple[str, Any], member: str) -> None:
        code, _ = hub.call(call[0], call[1], member.strip() or MEMBER)
        assert code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)

    as_operator()
    as_member()

    # Changes to scratch members never touched the network's own.
    assert before == _network(hub)
    assert grpc.StatusCode.OK == hub.verify(verification_pb2.VerifyRequest(qr_text=hub.samples[0]))


# Per field of a query: values a caller would send, and values the hub must refuse.
_AUDIT_FIELDS: dict[str, tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]] = {
    "since": (st.none() | _valid_stamp, _timestamp),
    "until": (st.none() | _valid_stamp, _timestamp),
    "member": (st.sampled_from(["", "", *NETWORK, "999"]), _field),
    "trans_ref": (st.sampled_from(["", "", "x" * 32]), _field | st.just("x" * 33)),
    "request_id": (st.sampled_from(["", "", "r" * 64]), _field | st.just("r" * 65)),
    "limit": (st.integers(min_value=0, max_value=10_000), _int32),
}


@st.composite
def _audit_requests(draw: st.DrawFn) -> audit_pb2.QueryAuditRequest:
    """A query with none, one or a few fields hostile."""
    hostile = draw(st.sets(st.sampled_from(sorted(_AUDIT_FIELDS)), max_size=3))
    fields = {
        name: draw(bad if name in hostile else good) for name, (good, bad) in _AUDIT_FIELDS.items()
    }
    return audit_pb2.QueryAuditRequest(**{k: v for k, v in fields.items() if v is not None})


def _check_records(request: audit_pb2.QueryAuditRequest, caller: str, records: Any) -> None:
    """An answer holds only what was asked, newest first."""
    assert len(records) <= (request.limit or 100)
    ats = [(r.at.seconds, r.at.nanos) for r in records]
    assert ats == sorted(ats, reverse=True)
    for record in records:
        if caller != OPERATOR:
            assert caller == record.requester
        for name in ("trans_ref", "request_id"):
            if getattr(request, name):
                assert getattr(request, name) == getattr(record, name)
        if request.member:
            assert request.member == record.requester


@pytest.mark.timeout(300)
def test_no_audit_query_makes_the_hub_fail_inside(hub: Hub) -> None:
    @settings(_SETTINGS, max_examples=AUDIT_EXAMPLES)
    @given(
        request=_audit_requests(),
        member=st.sampled_from([OPERATOR, OPERATOR, "014", "900"]) | _members,
    )
    def one(request: audit_pb2.QueryAuditRequest, member: str) -> None:
        caller = member.strip() or MEMBER
        code, response = hub.call("QueryAudit", request, caller)
        if code is grpc.StatusCode.OK:
            _check_records(request, caller, response.records)

    one()

    # The Verify test before this one left records: some answers hold them.
    code, reply = hub.call("QueryAudit", audit_pb2.QueryAuditRequest(), OPERATOR)
    assert grpc.StatusCode.OK == code
    assert reply.records


_health_names = st.sampled_from(["", *SERVICES, "txverify.v1.IssuerService/014"]) | _field


@pytest.mark.timeout(120)
def test_health_answers_any_service_name(hub: Hub) -> None:
    known = {"", *SERVICES}

    @settings(_SETTINGS, max_examples=HEALTH_EXAMPLES)
    @given(service=_health_names)
    def one(service: str) -> None:
        request = health_pb2.HealthCheckRequest(service=service)
        try:
            status = hub.health.Check(request, timeout=20).status
            code = grpc.StatusCode.OK
        except grpc.RpcError as error:
            code, status = error.code(), health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
        hub.count("Health/Check", code)
        # The health protocol's answers: the status, or NOT_FOUND for a name it does not know.
        assert code in (grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND), code
        assert (code is grpc.StatusCode.OK) == (
            status != health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
        )
        if service in known:
            assert health_pb2.HealthCheckResponse.SERVING == status

        stream = hub.health.Watch(request, timeout=20)
        first = next(stream)
        stream.cancel()
        hub.count("Health/Watch", grpc.StatusCode.OK)
        assert first.status == status  # Watch starts from what Check says

    one()


_symbols = (
    st.sampled_from(
        [
            "",
            *SERVICES,
            "txverify.v1.Member",
            "txverify.v1.MemberRegistry.RegisterMember",
            "grpc.health.v1.Health",
            "google.protobuf.Timestamp",
            "grpc.reflection.v1alpha.ServerReflection",
        ]
    )
    | _text
)
_files = (
    st.sampled_from(
        ["", "txverify/v1/registry.proto", "google/protobuf/timestamp.proto", "../../etc/passwd"]
    )
    | _text
)
_reflection_requests = st.lists(
    st.one_of(
        st.builds(reflection_pb2.ServerReflectionRequest, host=_text),
        st.builds(reflection_pb2.ServerReflectionRequest, host=_text, list_services=_text),
        st.builds(reflection_pb2.ServerReflectionRequest, file_by_filename=_files),
        st.builds(reflection_pb2.ServerReflectionRequest, file_containing_symbol=_symbols),
        st.builds(reflection_pb2.ServerReflectionRequest, all_extension_numbers_of_type=_symbols),
        st.builds(
            reflection_pb2.ServerReflectionRequest,
            file_containing_extension=st.builds(
                reflection_pb2.ExtensionRequest, containing_type=_symbols, extension_number=_int32
            ),
        ),
    ),
    min_size=1,
    max_size=3,
)


@pytest.mark.timeout(120)
def test_reflection_answers_any_request(hub: Hub) -> None:
    @settings(_SETTINGS, max_examples=REFLECTION_EXAMPLES)
    @given(requests=_reflection_requests)
    def one(requests: list[reflection_pb2.ServerReflectionRequest]) -> None:
        try:
            answers = list(hub.reflection.ServerReflectionInfo(iter(requests), timeout=20))
        except grpc.RpcError as error:
            hub.count("ServerReflectionInfo", error.code())
            raise AssertionError(
                f"{error.code().name}: {error.details()} for {requests!r:.300}"
            ) from None
        hub.count("ServerReflectionInfo", grpc.StatusCode.OK)
        # One answer each; what it cannot find it says in the answer (NOT_FOUND,
        # INVALID_ARGUMENT), as the reflection protocol does.
        assert len(requests) == len(answers)
        for answer in answers:
            if answer.HasField("error_response"):
                assert answer.error_response.error_code in (3, 5), answer

    one()
