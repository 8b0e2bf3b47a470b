"""Fuzz target: QueryAuditRequest bytes through the hub's AuditLog servicer (offline_hub.py).

Input: one control byte (bits 0-2: the caller, CALLERS: operators, members,
strangers), then the serialized QueryAuditRequest. The audit holds what the
verify target's seeds left (OK answers, refusals, replays, of several members),
written on first use.

Every answer is OK or a documented refusal (rpc_checks.check_refusal); a bad
field is INVALID_ARGUMENT naming it (the M10 defect: a `since` outside years
1-9999 answered UNKNOWN). An answer holds exactly the records the filter asks
for, of the caller's own requests unless it is an operator, newest first, at
most `limit` (0: 100): checked against every record, filtered here. Bytes that
are not a QueryAuditRequest are refused by protobuf, as gRPC would.
"""

from __future__ import annotations

from datetime import datetime

import grpc
from google.protobuf.message import DecodeError

from offline_hub import ALLOWED, SUSPENDED, network
from rpc_checks import Caller, RpcCounts, callers, check_refusal
from txverify.errors import details_from_metadata
from txverify.hub.audit import AuditEntry, AuditFilter
from txverify.units import from_timestamp
from txverify.v1 import audit_pb2, verification_pb2
from verify_target import check_verify

CALLERS = callers(("014", "900", SUSPENDED))
FIELDS = frozenset({"since", "until", "member", "trans_ref", "request_id", "limit"})
COUNTS = RpcCounts()
_seeded = False


def seed_audit() -> None:
    """Audit records to read: the verify target's seeds, once per process."""
    global _seeded
    if _seeded:
        return
    _seeded = True
    from seed_corpus import verify_requests  # imports this target's neighbours

    for data in verify_requests():
        check_verify(data, verification_pb2.VerifyRequest.FromString(data[1:]))


def _instant(stamp: object) -> datetime:
    return from_timestamp(stamp)  # type: ignore[arg-type]


def expected(request: audit_pb2.QueryAuditRequest, scope: str) -> list[AuditEntry]:
    """What the answer must hold: every record, filtered and cut here."""
    every = network().audit.store.query(AuditFilter(limit=1_000_000))  # newest first
    since = _instant(request.since) if request.HasField("since") else None
    until = _instant(request.until) if request.HasField("until") else None
    return [
        e
        for e in every
        if (not scope or e.requester == scope)
        and (not request.trans_ref or e.trans_ref == request.trans_ref)
        and (not request.request_id or e.request_id == request.request_id)
        and (since is None or e.at >= since)
        and (until is None or e.at < until)
    ][: request.limit or 100]


def check(caller: Caller, request: audit_pb2.QueryAuditRequest) -> None:
    outcome = network().query_audit(request, **caller.options())  # type: ignore[arg-type]
    COUNTS.add("QueryAudit", outcome.code)
    assert outcome.code in ALLOWED, f"{outcome.code.name}: {outcome.details}"
    if outcome.code is not grpc.StatusCode.OK:
        check_refusal("QueryAudit", outcome)
        details = details_from_metadata(outcome.code, outcome.details, outcome.trailing)
        assert {v.field for v in details.violations} <= FIELDS, details.violations
        if not caller.member and not caller.operator:
            assert grpc.StatusCode.UNAUTHENTICATED == outcome.code, outcome
        return
    assert caller.operator or caller.member, f"{caller.name} read the audit"
    if not caller.operator:
        assert request.member in ("", caller.member), f"{caller.name} read {request.member}"
    response: audit_pb2.QueryAuditResponse = outcome.response
    response.SerializeToString()
    scope = request.member if caller.operator else caller.member
    want = [(e.request_id, e.requester, e.trans_ref, e.at) for e in expected(request, scope)]
    got = [(r.request_id, r.requester, r.trans_ref, _instant(r.at)) for r in response.records]
    assert want == got, (request, want[:3], got[:3])


def TestOneInput(data: bytes) -> None:
    """One fuzz input (the name atheris looks for)."""
    seed_audit()
    try:
        request = audit_pb2.QueryAuditRequest.FromString(data[1:])
    except DecodeError:
        COUNTS.add("QueryAudit", None)
        return  # gRPC refuses such bytes before the hub sees them
    check(CALLERS[(data[0] if data else 0) & 7], request)
