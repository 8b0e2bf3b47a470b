"""Fuzz target: MemberRegistry requests as bytes through the hub's real servicer (offline_hub.py).

Input: up to MAX_CALLS records, each one control byte, one length byte and that
many bytes of a serialized request (a length of 255: the rest of the input). The
control byte picks the RPC (bits 0-2, RPCS) and the caller (bits 3-5, CALLERS:
operators, members, strangers). Every input starts from offline_hub's members
(OfflineNetwork.reset_registry) and its records run in order, so the fuzzer can
register a member, then subscribe, update or terminate it.

Every answer is OK or a documented refusal (rpc_checks.check_refusal); nobody
but an operator gets OK; a refused call changes nothing. An accepted change is
what the registry holds, and reads back from its store equal; the member's rate
limit makes a bucket as the hub's limiter does (its on_change), and the longest
wait that bucket can say travels in a RetryInfo: a rate of 1e-300/s once made it
1e300 s, and Verify UNKNOWN. Bytes that are not the request are refused by
protobuf, as gRPC would; any other exception, INTERNAL or UNKNOWN is a crash.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message

from offline_hub import ALLOWED, SUSPENDED, network
from rpc_checks import Caller, RpcCounts, callers, check_refusal
from txverify.errors import Reason, ServiceError
from txverify.hub.admission import member_rate_limit
from txverify.hub.registry import MemberDirectory
from txverify.hub.registry.service import member_to_pb
from txverify.hub.resilience.ratelimit import RateLimiter
from txverify.v1 import registry_pb2

RPCS: tuple[tuple[str, type[Message]], ...] = (
    ("RegisterMember", registry_pb2.RegisterMemberRequest),
    ("GetMember", registry_pb2.GetMemberRequest),
    ("ListMembers", registry_pb2.ListMembersRequest),
    ("UpdateMember", registry_pb2.UpdateMemberRequest),
    ("SetMemberStatus", registry_pb2.SetMemberStatusRequest),
    ("Subscribe", registry_pb2.SubscribeRequest),
    ("Unsubscribe", registry_pb2.UnsubscribeRequest),
    ("RegisterMember", registry_pb2.RegisterMemberRequest),  # 8 slots: the richest twice
)
CHANGES = frozenset(
    {"RegisterMember", "UpdateMember", "SetMemberStatus", "Subscribe", "Unsubscribe"}
)
CALLERS = callers(("014", "004", SUSPENDED))
# Verify's answers, and the registry's own: a code registered already.
REGISTRY_ALLOWED = ALLOWED | {grpc.StatusCode.ALREADY_EXISTS}
MAX_CALLS = 4
REST = 255  # a length byte saying "the rest of the input"
COUNTS = RpcCounts()


def records(data: bytes) -> list[tuple[int, bytes]]:
    """(control byte, request bytes) of each record of an input."""
    found: list[tuple[int, bytes]] = []
    at = 0
    while at < len(data) and len(found) < MAX_CALLS:
        control = data[at]
        length = data[at + 1] if at + 1 < len(data) else REST
        start = at + 2
        end = len(data) if length == REST else min(len(data), start + length)
        found.append((control, data[start:end]))
        at = end
    return found


def record(control: int, request: Message) -> bytes:
    """One record (the seed corpus writes inputs with it)."""
    body = request.SerializeToString()
    return bytes([control, len(body) if len(body) < REST else REST]) + body


def control(rpc: str, caller: str) -> int:
    """The control byte of `rpc` (its first slot) sent by the caller named `caller`."""
    rpc_at = next(i for i, (name, _) in enumerate(RPCS) if name == rpc)
    caller_at = next(i for i, c in enumerate(CALLERS) if c.name == caller)
    return rpc_at | caller_at << 3


def check_limit(code: str) -> None:
    """The member's limit, as the hub's limiter takes it, says a wait RetryInfo carries."""
    member = network().registry_membership.directory.get(code)
    assert member is not None
    limit = member_rate_limit(member)
    if limit is None:
        return
    limiter = RateLimiter(None, clock=lambda: 0.0)  # no time passes: the bucket only empties
    limiter.set_limit(code, limit)
    waits = [limiter.try_take(code) for _ in range(min(limit.burst, 4) + 1)]
    for wait in (waits[-1], 1 / limit.rate):  # the last, and the longest it can say
        assert 0 <= wait <= 1000, wait
        error = ServiceError(Reason.RATE_LIMITED, "over its limit", retry_after=wait)
        error.to_status().SerializeToString()


def check_answer(rpc: str, request: Any, response: Any) -> None:
    net = network()
    directory = net.registry_membership.directory
    response.SerializeToString()
    if rpc == "ListMembers":
        assert [m.code for m in directory.all()] == [m.code for m in response.members]
        return
    code = response.member.code
    stored = directory.get(code)
    assert stored is not None, code
    assert member_to_pb(stored, net.gateway.circuit_state(code)) == response.member
    if rpc == "GetMember":
        assert request.code == code
        assert request.include_history or not response.history
        return
    assert rpc in CHANGES
    if rpc != "RegisterMember":
        assert request.code == code
    # What was stored reads back the same (a NaN would not: NaN != NaN).
    reread = MemberDirectory(net.registry_membership.store.load().members).get(code)
    assert reread == stored, (reread, stored)
    check_limit(code)


def call(caller: Caller, rpc: str, request: Message) -> None:
    net = network()
    version = net.registry_membership.version
    outcome = net.registry(rpc, request, **caller.options())  # type: ignore[arg-type]
    COUNTS.add(rpc, outcome.code)
    assert outcome.code in REGISTRY_ALLOWED, f"{rpc} {outcome.code.name}: {outcome.details}"
    if outcome.code is grpc.StatusCode.OK:
        assert caller.operator, f"{rpc} answered {caller.name}"
        check_answer(rpc, request, outcome.response)
    else:
        check_refusal(rpc, outcome)
        assert version == net.registry_membership.version, f"a refused {rpc} changed members"
        if not caller.operator:
            assert outcome.code in (
                grpc.StatusCode.PERMISSION_DENIED,
                grpc.StatusCode.UNAUTHENTICATED,
            ), f"{rpc} {outcome.code.name} for {caller.name}"


def TestOneInput(data: bytes) -> None:
    """One fuzz input (the name atheris looks for)."""
    net = network()
    net.reset_registry()
    for control_byte, body in records(data):
        rpc, message = RPCS[control_byte & 7]
        try:
            request = message.FromString(body)
        except DecodeError:
            COUNTS.add(rpc, None)
            continue  # gRPC refuses such bytes before the hub sees them
        call(CALLERS[(control_byte >> 3) & 7], rpc, request)
