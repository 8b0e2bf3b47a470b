"""Hostile bytes on the wire: a raw HTTP/2 gRPC client (h2) against the in-process hub.

The grpc client library cannot send what this test sends: metadata values that
are not UTF-8 or not ASCII, control characters HTTP/2 forbids, header lists past
gRPC's limits, duplicate identity headers, malformed grpc-timeout and -bin
values, and bodies a protobuf encoder never writes (invalid UTF-8 in a string
field, truncated or lying length prefixes, a compressed flag with no encoding).
Each case sends one such request with an otherwise valid VerifyRequest (a real
visible slip) and records what came back: a grpc-status, a RST_STREAM, a
GOAWAY, a closed connection or nothing.

What the hub's own code answers is a documented status with txverify's
ErrorInfo (or OK), never INTERNAL or UNKNOWN. gRPC itself refuses some breaches
of its wire protocol before any hub code runs, a few of them with INTERNAL and
no ErrorInfo; those cases are listed, and are the only INTERNAL allowed. A
stream that ends without a whole message gets no answer. After every case the
hub still verifies a slip on a fresh connection. `pytest -s` prints the table
and the number of requests sent.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import struct
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import grpc
import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import pytest

from txverify.errors import STATUS_DETAILS_KEY, details_from_metadata
from txverify.hub.app import RunningHub
from txverify.simulators.bank import SlipVisibility
from txverify.simulators.server import RunningSimulator
from txverify.v1 import verification_pb2

HOST = "127.0.0.1"
VERIFY = "/txverify.v1.VerificationService/Verify"
GET_MEMBER = "/txverify.v1.MemberRegistry/GetMember"
QUERY_AUDIT = "/txverify.v1.AuditLog/QueryAudit"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
MEMBER = b"002"
FORBIDDEN = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
STATUS_BY_NUMBER = {status.value[0]: status for status in grpc.StatusCode}

Headers = tuple[tuple[bytes, bytes], ...]

# Outbound checks off: the point is to send what HTTP/2 and gRPC forbid (control
# characters, uppercase names) and see what the hub's transport does with it.
CLIENT_CONFIG = h2.config.H2Configuration(
    client_side=True,
    header_encoding=None,
    validate_outbound_headers=False,
    normalize_outbound_headers=False,
)


@dataclass(slots=True)
class Outcome:
    """What one raw call came back with."""

    headers: dict[bytes, bytes] = field(default_factory=dict)  # response headers and trailers
    data: bytes = b""
    reset: h2.errors.ErrorCodes | int | None = None  # RST_STREAM error code
    goaway: h2.errors.ErrorCodes | int | None = None  # GOAWAY error code
    closed: bool = False  # the connection ended without an answer
    finished: bool = False

    @property
    def status(self) -> grpc.StatusCode | None:
        raw = self.headers.get(b"grpc-status")
        return None if raw is None else STATUS_BY_NUMBER.get(int(raw), grpc.StatusCode.UNKNOWN)

    @property
    def message(self) -> str:
        raw = self.headers.get(b"grpc-message", b"")
        return urllib.parse.unquote(raw.decode("ascii", "replace"))

    @property
    def reason(self) -> str:
        """ErrorInfo.reason from grpc-status-details-bin, "" when absent."""
        raw = self.headers.get(b"grpc-status-details-bin")
        if raw is None or self.status is None:
            return ""
        rich = base64.b64decode(raw + b"=" * (-len(raw) % 4))
        return details_from_metadata(self.status, self.message, [(STATUS_DETAILS_KEY, rich)]).reason

    @property
    def summary(self) -> str:
        """What a case expects: "STATUS [REASON]", "RST_STREAM CODE", "no answer"..."""
        if self.status is not None:
            return f"{self.status.name} [{self.reason}]" if self.reason else self.status.name
        if self.reset is not None:
            return f"RST_STREAM {_code_name(self.reset)}"
        if self.goaway is not None:
            return f"GOAWAY {_code_name(self.goaway)}"
        status = self.headers.get(b":status", b"").decode()
        if status and status != "200":
            return f"HTTP {status}"
        return "connection closed" if self.closed else "no answer"

    def describe(self) -> str:
        return f"{self.summary}: {self.message[:60]}" if self.message else self.summary


def _code_name(code: h2.errors.ErrorCodes | int) -> str:
    return code.name if isinstance(code, h2.errors.ErrorCodes) else str(code)


class Sent:
    """How many raw requests this module sent, hostile and follow-up alike."""

    count = 0


async def exchange(
    port: int,
    path: str,
    metadata: Headers,
    body: bytes,
    *,
    settle: bool = True,
    patience: float = 10,
) -> Outcome:
    """One gRPC call over a new plain-TCP HTTP/2 connection, flow control respected.

    With `settle`, the request waits until the hub's SETTINGS are acknowledged, as
    on a connection in use; without, it follows the preface at once (which RFC
    9113 allows), when none of the hub's settings are in force yet.
    """
    Sent.count += 1
    outcome = Outcome()
    async with asyncio.timeout(patience):
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            await _converse(reader, writer, port, path, metadata, body, settle, outcome)
        except (ConnectionError, h2.exceptions.StreamClosedError):
            outcome.closed = True  # the hub hung up while we were still sending
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
    return outcome


async def _converse(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    port: int,
    path: str,
    metadata: Headers,
    body: bytes,
    settle: bool,
    outcome: Outcome,
) -> None:
    conn = h2.connection.H2Connection(config=CLIENT_CONFIG)
    conn.initiate_connection()
    writer.write(conn.data_to_send())
    while settle:
        received = await reader.read(65536)
        if not received:
            outcome.closed = True
            return
        events = conn.receive_data(received)  # answers the hub's SETTINGS with an ACK
        settle = not any(isinstance(e, h2.events.RemoteSettingsChanged) for e in events)
    stream = conn.get_next_available_stream_id()
    conn.send_headers(
        stream,
        [
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", path.encode()),
            (b":authority", f"{HOST}:{port}".encode()),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
            *metadata,
        ],
    )
    pending = memoryview(body)
    half_closed = False
    while not outcome.finished:
        while pending and not outcome.finished:
            size = min(
                len(pending), conn.local_flow_control_window(stream), conn.max_outbound_frame_size
            )
            if size <= 0:
                break  # wait for a WINDOW_UPDATE
            conn.send_data(stream, bytes(pending[:size]))
            pending = pending[size:]
        if not pending and not half_closed and not outcome.finished:
            conn.end_stream(stream)
            half_closed = True
        writer.write(conn.data_to_send())
        await writer.drain()
        received = await reader.read(65536)
        if not received:
            outcome.closed = True
            return
        for event in conn.receive_data(received):
            _take(conn, stream, event, outcome)


def _take(
    conn: h2.connection.H2Connection, stream: int, event: h2.events.Event, outcome: Outcome
) -> None:
    if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
        outcome.headers.update((bytes(k), bytes(v)) for k, v in event.headers or ())
    elif isinstance(event, h2.events.DataReceived):
        outcome.data += event.data or b""
        if event.flow_controlled_length:
            conn.acknowledge_received_data(event.flow_controlled_length, stream)
    elif isinstance(event, h2.events.StreamEnded):
        outcome.finished = True
    elif isinstance(event, h2.events.StreamReset):
        outcome.reset = event.error_code
        outcome.finished = True
    elif isinstance(event, h2.events.ConnectionTerminated):
        outcome.goaway = event.error_code
        outcome.finished = True


def frame(message: bytes, *, compressed: bool = False) -> bytes:
    """A gRPC length-prefixed message: flag byte, 4-byte big-endian length, bytes."""
    return struct.pack(">BI", int(compressed), len(message)) + message


def string_field(number: int, value: bytes) -> bytes:
    """A protobuf length-delimited field written by hand (no UTF-8 check): tag, length, bytes."""
    return _varint(number << 3 | 2) + _varint(len(value)) + value


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        if not value:
            return bytes((*out, low))
        out.append(low | 0x80)


@dataclass(frozen=True, slots=True)
class Case:
    """One hostile request and the answer it gets (Outcome.summary)."""

    name: str
    expect: str
    metadata: Headers = ((b"x-member-id", MEMBER),)
    body: Callable[[bytes], bytes] = frame  # from a valid VerifyRequest's bytes
    path: str = VERIFY
    settle: bool = True  # wait for the hub's SETTINGS to be in force first


def _member(value: bytes) -> Headers:
    return ((b"x-member-id", value),)


def _with(*extra: tuple[bytes, bytes]) -> Headers:
    return ((b"x-member-id", MEMBER), *extra)


def _many(count: int) -> Headers:
    return _with(*((f"x-h{i:05d}".encode(), b"v") for i in range(count)))


BAD_UTF8 = b"\xff\xfe"
UNKNOWN_MEMBER = "UNAUTHENTICATED [UNKNOWN_MEMBER]"
INVALID_REQUEST = "INVALID_ARGUMENT [INVALID_REQUEST]"

# Answered by the hub's own code: a documented status with txverify's ErrorInfo, or OK.
HUB_ANSWERS = (
    # x-member-id, the header the hub reads for identity (dev mode). gRPC passes
    # any bytes through (non-UTF-8 decoded as latin-1); the hub refuses them as
    # not a member, and its message echoes at most 64 characters, percent-encoded.
    Case("member not UTF-8", UNKNOWN_MEMBER, _member(b"\xff\xfe\x80")),
    Case("member latin-1", UNKNOWN_MEMBER, _member("0é2".encode("latin-1"))),
    Case("member UTF-8 Thai digits", UNKNOWN_MEMBER, _member("๐๐๒".encode())),
    Case("member control \\x01", UNKNOWN_MEMBER, _member(b"00\x012")),
    Case("member control \\x7f", UNKNOWN_MEMBER, _member(b"002\x7f")),
    Case("member CR LF", UNKNOWN_MEMBER, _member(b"002\r\nx-member-id: 014")),
    Case("member NUL", UNKNOWN_MEMBER, _member(b"002\x00")),
    Case("member empty", UNKNOWN_MEMBER, _member(b"")),
    Case("member 4 KB", UNKNOWN_MEMBER, _member(b"0" * 4096)),
    # Before the SETTINGS ACK gRPC applies no header-list limit at all.
    Case("member 20 KB, before SETTINGS ACK", UNKNOWN_MEMBER, _member(b"0" * 20480), settle=False),
    Case("1,000 headers, before SETTINGS ACK", "OK", _many(1000), settle=False),
    # Duplicates: the first x-member-id counts.
    Case("member twice: 002 then 999", UNKNOWN_MEMBER, (*_member(MEMBER), *_member(b"999"))),
    Case("member twice: 999 then 002", UNKNOWN_MEMBER, (*_member(b"999"), *_member(MEMBER))),
    # Metadata the hub does not read.
    Case("x-request-id not UTF-8", "OK", _with((b"x-request-id", b"\xff\xfe\x80"))),
    Case("grpc-timeout huge", "OK", _with((b"grpc-timeout", b"99999999H"))),
    Case("grpc-timeout too many digits", "OK", _with((b"grpc-timeout", b"123456789012S"))),
    # Bodies no protobuf encoder writes: refused by the request guard (txverify.runtime.grpcserver).
    Case("qr_text not UTF-8", INVALID_REQUEST, body=lambda _: frame(string_field(1, BAD_UTF8))),
    Case(
        "request_id not UTF-8",
        INVALID_REQUEST,
        body=lambda valid: frame(valid + string_field(3, BAD_UTF8)),
    ),
    Case(
        "slip_ref.trans_ref not UTF-8",
        INVALID_REQUEST,
        body=lambda _: frame(string_field(2, string_field(1, b"014") + string_field(2, BAD_UTF8))),
    ),
    Case("garbage protobuf", INVALID_REQUEST, body=lambda _: frame(b"\xff" * 7 + b"\x0a\xff")),
    Case("two messages", "OK", body=lambda valid: frame(valid) * 2),
    # Every service the hub serves, not only Verify.
    Case(
        "GetMember code not UTF-8",
        INVALID_REQUEST,
        body=lambda _: frame(string_field(1, BAD_UTF8)),
        path=GET_MEMBER,
    ),
    Case(
        "QueryAudit member not UTF-8",
        INVALID_REQUEST,
        body=lambda _: frame(string_field(3, BAD_UTF8)),
        path=QUERY_AUDIT,
    ),
    Case(
        "Health Check garbage",
        INVALID_REQUEST,
        body=lambda _: frame(b"\xff" * 8),
        path=HEALTH_CHECK,
    ),
    Case(
        "reflection garbage",
        INVALID_REQUEST,
        body=lambda _: frame(b"\xff" * 8),
        path=REFLECTION,
    ),
)

# Refused by gRPC itself, before any hub code runs (no txverify ErrorInfo). gRPC
# answers some breaches of its wire protocol with INTERNAL; the hub cannot
# change that, and these are the only INTERNAL answers allowed.
GRPC_REFUSES = (
    Case("member 20 KB", "RESOURCE_EXHAUSTED", _member(b"0" * 20480)),
    Case("1,000 small headers", "RESOURCE_EXHAUSTED", _many(1000)),
    Case("member header uppercase", "INTERNAL", ((b"X-Member-Id", MEMBER),)),
    Case("-bin header bad base64", "INTERNAL", _with((b"x-trace-bin", b"!!not*base64%%"))),
    Case("grpc-timeout malformed", "INTERNAL", _with((b"grpc-timeout", b"soon"))),
    Case("grpc-timeout negative", "INTERNAL", _with((b"grpc-timeout", b"-1S"))),
    Case("grpc-timeout zero", "DEADLINE_EXCEEDED", _with((b"grpc-timeout", b"0n"))),
    Case(
        "compressed flag, no grpc-encoding",
        "INTERNAL",
        body=lambda valid: frame(valid, compressed=True),
    ),
    Case(
        "compressed flag, gzip, not gzip",
        "INTERNAL",
        _with((b"grpc-encoding", b"gzip")),
        body=lambda valid: frame(valid, compressed=True),
    ),
    Case("grpc-encoding unknown", "INTERNAL", _with((b"grpc-encoding", b"br"))),
    Case(
        "length prefix claims 4 GB",
        "RESOURCE_EXHAUSTED",
        body=lambda valid: struct.pack(">BI", 0, 2**32 - 1) + valid,
    ),
    Case(
        "message over the hub's 4 MiB cap",
        "RESOURCE_EXHAUSTED",
        body=lambda _: frame(string_field(1, b"9" * (5 << 20))),
    ),
)

# The stream ends without a whole message: grpc.aio returns from the RPC without
# a status and the stream stays open (holding one of max_concurrent_rpcs) until
# the client goes away.
NO_ANSWER = (
    Case("no message", "no answer", body=lambda _: b""),
    Case("length prefix truncated", "no answer", body=lambda _: b"\x00\x00\x00"),
    Case("message shorter than its prefix", "no answer", body=lambda valid: frame(valid)[:-5]),
)

RESULTS: list[tuple[str, str]] = []


@pytest.fixture(scope="module", autouse=True)
def table() -> Iterator[None]:
    yield
    width = max((len(name) for name, _ in RESULTS), default=0)
    print(f"\nraw HTTP/2: {Sent.count} requests sent, {len(RESULTS)} of them hostile")
    for name, outcome in RESULTS:
        print(f"  {name:<{width}}  {outcome}")


def _visible_qr(sim: RunningSimulator, code: str = "014") -> bytes:
    """A VerifyRequest for a slip the issuer shows, serialized."""
    bank = sim.nodes[code].bank
    for slip in bank.list_slips(1000, None):
        if bank.visibility(slip.transaction) is SlipVisibility.VISIBLE:
            return verification_pb2.VerifyRequest(qr_text=slip.qr_text).SerializeToString()
    raise AssertionError(f"no visible slip at {code}")


async def _send(case: Case, port: int, valid: bytes, patience: float = 10) -> Outcome:
    outcome = await exchange(
        port, case.path, case.metadata, case.body(valid), settle=case.settle, patience=patience
    )
    RESULTS.append((case.name, outcome.describe()))
    return outcome


async def _still_verifies(port: int, valid: bytes) -> None:
    """A normal Verify on a fresh connection is answered: the hub is up and serving."""
    after = await exchange(port, VERIFY, _member(MEMBER), frame(valid))
    assert "OK" == after.summary, after.describe()
    flag, length = struct.unpack(">BI", after.data[:5])
    assert (0, length) == (flag, len(after.data) - 5)
    response = verification_pb2.VerifyResponse.FromString(after.data[5:])
    assert verification_pb2.VERDICT_UNSPECIFIED != response.verdict


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case", HUB_ANSWERS, ids=[case.name for case in HUB_ANSWERS])
async def test_hub_answers_hostile_input_with_a_documented_status(
    case: Case, hub: RunningHub, simulator: RunningSimulator
) -> None:
    valid = _visible_qr(simulator)

    outcome = await _send(case, hub.port, valid)

    assert outcome.status not in FORBIDDEN, outcome.describe()
    assert case.expect == outcome.summary, outcome.describe()
    await _still_verifies(hub.port, valid)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case", GRPC_REFUSES, ids=[case.name for case in GRPC_REFUSES])
async def test_grpc_refuses_broken_protocol_before_the_hub(
    case: Case, hub: RunningHub, simulator: RunningSimulator
) -> None:
    valid = _visible_qr(simulator)

    outcome = await _send(case, hub.port, valid)

    assert case.expect == outcome.summary, outcome.describe()
    assert "" == outcome.reason  # no txverify ErrorInfo: no hub code answered
    await _still_verifies(hub.port, valid)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case", NO_ANSWER, ids=[case.name for case in NO_ANSWER])
async def test_request_without_a_whole_message_gets_no_answer(
    case: Case, hub: RunningHub, simulator: RunningSimulator
) -> None:
    valid = _visible_qr(simulator)

    with pytest.raises(TimeoutError):
        await _send(case, hub.port, valid, patience=2)
    RESULTS.append((case.name, "no answer in 2 s (stream left open)"))

    await _still_verifies(hub.port, valid)


SIMULATOR_METHODS = (
    "/txverify.v1.IssuerService/IssuerInquiry",
    "/txverify.v1.BankSimulator/ListBanks",
)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("path", SIMULATOR_METHODS, ids=lambda path: path.rsplit("/", 1)[1])
async def test_simulated_bank_refuses_unparseable_request_as_invalid(
    path: str, simulator: RunningSimulator
) -> None:
    port = simulator.control_port if "BankSimulator" in path else simulator.nodes["014"].port

    outcome = await exchange(port, path, (), frame(b"\xff" * 8))
    RESULTS.append((f"simulator {path.rsplit('/', 1)[1]} garbage", outcome.describe()))

    assert INVALID_REQUEST == outcome.summary, outcome.describe()
