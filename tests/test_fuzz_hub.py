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

import grpc
import pytest
from conftest import stop_process
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from txverify.v1 import common_pb2, verification_pb2, verification_pb2_grpc

EXAMPLES = 600  # 1,000 until `make test` neared 10 minutes; `make fuzz` goes far deeper
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
        self.tried = 0
        self.statuses: dict[str, int] = {}

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
            "clients.cli",
            "up",
            "--port",
            "0",
            "--console",
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
            if found := re.search(r"txverify verify (\S+)", line):
                samples.append(found[1])
            if "Network recorded" in line:
                break
        assert address, "txverify up did not print the hub's address"
        assert samples, "txverify up did not print sample slips"
        running = Hub(address, samples, _hub_pid(proc.pid))
        yield running
        print(f"\nfuzz: {running.tried} inputs tried, answers by status: {running.statuses}")
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
