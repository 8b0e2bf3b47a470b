"""Fuzz target: VerifyRequest bytes through the hub's Verify, in-process (offline_hub.py).

Input: one control byte, then the serialized VerifyRequest. The control byte
picks who calls and how: bits 0-2 the member (MEMBERS), bits 3-5 the time the
caller has left (DEADLINES), bit 6 mTLS instead of dev mode, bit 7 a caller off
loopback (dev) or no x-member-id header (mTLS).

Each request goes through the hub's field checks one by one (request id, slip,
expectations, and the checks of a valid expectation against issuer answers), so
that every field is checked even when an earlier one fails, and then through the
real VerificationServicer.Verify with simulated issuers behind it. Bytes that are
not a VerifyRequest are refused by protobuf (DecodeError), as gRPC would; any
other exception, or an answer INTERNAL or UNKNOWN, is a crash.
"""

from __future__ import annotations

import grpc
from google.protobuf.message import DecodeError

from offline_hub import ALLOWED, LOOPBACK_PEER, REMOTE_PEER, Outcome, network
from txverify.errors import Reason, ServiceError, details_from_metadata
from txverify.hub.checks import evaluate, validate_expectations, verdict
from txverify.hub.identity import IdentityMode
from txverify.hub.router import checked_request_id
from txverify.hub.slip import slip_of
from txverify.simulators.issuer import masked_transaction
from txverify.v1 import common_pb2, verification_pb2
from txverify.wire import MEMBER_HEADER

MEMBERS = ("014", "004", "900", "002", "006", "025", "999", "")
DEADLINES = (None, 5.0, 0.5, 0.06, 0.05, 0.0, -1.0, 86_400.0)
_FIELD_REASONS = {Reason.INVALID_REQUEST, Reason.INVALID_SLIP_QR}
_answers: list[common_pb2.Transaction] = []


def answers() -> list[common_pb2.Transaction]:
    """Issuer answers to check expectations against: real masked ones, and an empty one."""
    if not _answers:
        slips = network().slips()
        _answers.extend(masked_transaction(slip.transaction) for slip in slips[:: len(slips) // 4])
        _answers.append(common_pb2.Transaction())
    return _answers


def control(data: bytes) -> tuple[str, float | None, bool, bool]:
    """(member, seconds left, mTLS, the odd one out) from the first byte."""
    flags = data[0] if data else 0
    return MEMBERS[flags & 7], DEADLINES[(flags >> 3) & 7], bool(flags & 64), bool(flags & 128)


def check_refusal(error: ServiceError, reasons: set[Reason]) -> None:
    assert error.reason in reasons, f"{error.reason}: {error}"
    error.to_status().SerializeToString()  # what abort() sends must encode


def check_fields(request: verification_pb2.VerifyRequest) -> None:
    """Each field check on its own: it accepts, or refuses as INVALID_ARGUMENT."""
    for check in (
        lambda: checked_request_id(request.request_id),
        lambda: slip_of(request),
        lambda: validate_expectations(request.expect),
    ):
        try:
            check()
        except ServiceError as error:
            check_refusal(error, _FIELD_REASONS)
    try:
        validate_expectations(request.expect)
    except ServiceError:
        return
    for tx in answers():
        checks = evaluate(request.expect, tx)
        verdict(checks, 0)
        verdict(checks, 1)
        verification_pb2.VerifyResponse(transaction=tx, checks=checks).SerializeToString()


def check_verify(data: bytes, request: verification_pb2.VerifyRequest) -> Outcome:
    member, remaining, tls, odd = control(data)
    metadata = [] if not member or (tls and odd) else [(MEMBER_HEADER, member)]
    if tls:
        outcome = network().verify(
            request,
            metadata=metadata,
            mode=IdentityMode.TLS,
            common_names=[member.encode()] if member else [],
            peer=REMOTE_PEER,
            remaining=remaining,
        )
    else:
        outcome = network().verify(
            request,
            metadata=metadata,
            peer=REMOTE_PEER if odd else LOOPBACK_PEER,
            remaining=remaining,
        )
    assert outcome.code in ALLOWED, f"{outcome.code.name}: {outcome.details}"
    if outcome.code is grpc.StatusCode.OK:
        response: verification_pb2.VerifyResponse = outcome.response
        slip = slip_of(request)
        assert (slip.sending_bank, slip.trans_ref) == (
            response.transaction.sending_bank,
            response.transaction.trans_ref,
        )
        assert not request.request_id or request.request_id == response.request_id
        assert verification_pb2.VERDICT_UNSPECIFIED != response.verdict
        response.SerializeToString()
    else:
        details = details_from_metadata(outcome.code, outcome.details, outcome.trailing)
        assert details.reason in Reason.__members__, f"no ErrorInfo reason: {details}"
    return outcome


def TestOneInput(data: bytes) -> None:
    """One fuzz input (the name atheris looks for)."""
    try:
        request = verification_pb2.VerifyRequest.FromString(data[1:])
    except DecodeError:
        return  # gRPC refuses such bytes before the hub sees them
    check_fields(request)
    check_verify(data, request)
