"""AuditLog: reading the audit trail over gRPC; operators see all, members only their own."""

from __future__ import annotations

import logging
import re
from collections.abc import Collection
from datetime import datetime
from typing import Any

import grpc
from google.protobuf import timestamp_pb2

from txverify.banks import is_member_code
from txverify.errors import FieldViolation, Reason, ServiceError, abort
from txverify.hub.audit import AuditEntry, AuditFilter, AuditStore
from txverify.hub.identity import IdentityMode, identify, readable_member
from txverify.hub.membership import Membership
from txverify.hub.router import MAX_REQUEST_ID
from txverify.units import from_timestamp, to_timestamp
from txverify.v1 import audit_pb2, audit_pb2_grpc

log = logging.getLogger(__name__)
MAX_LIMIT = 10_000
# What the audit holds, so a filter outside it can only be a mistake (and a NUL, which
# PostgreSQL cannot compare, does not reach the database): the slip's transRef as
# server/txverify/hub/slip.py admits it, and the request id as server/txverify/hub/router.py does.
_TRANS_REF = re.compile(r"[A-Za-z0-9]{1,32}")  # fullmatch
_REQUEST_ID = re.compile(rf"[!-~]{{1,{MAX_REQUEST_ID}}}")  # fullmatch
# The instants a Timestamp may name (google/protobuf/timestamp.proto): years 1-9999.
_FIRST_SECOND = -62_135_596_800  # 0001-01-01T00:00:00Z
_LAST_SECOND = 253_402_300_799  # 9999-12-31T23:59:59Z
_TIME_RANGE = "a time in years 1-9999 UTC (seconds -62135596800..253402300799, nanos 0-999999999)"


def entry_to_pb(entry: AuditEntry) -> audit_pb2.AuditRecord:
    return audit_pb2.AuditRecord(
        at=to_timestamp(entry.at),
        request_id=entry.request_id,
        requester=entry.requester,
        requester_reference=entry.requester_reference,
        issuer=entry.issuer,
        trans_ref=entry.trans_ref,
        status=entry.status,
        reason=entry.reason,
        verdict=entry.verdict,  # type: ignore[arg-type]
        latency_us=entry.latency_us,
        replayed=entry.replayed,
        trace_id=entry.trace_id,
    )


class AuditLogServicer(audit_pb2_grpc.AuditLogServicer):
    """Thin adapter over AuditStore.query with access control."""

    def __init__(
        self,
        store: AuditStore,
        membership: Membership,
        *,
        mode: IdentityMode,
        operators: Collection[str],
    ) -> None:
        self.store = store
        self.membership = membership
        self.mode = mode
        self.operators = frozenset(operators)

    def _scope(self, context: grpc.aio.ServicerContext[Any, Any], asked: str) -> str:
        """The member whose records the caller may read ("" = all, for operators)."""
        return readable_member(
            identify(context, self.mode),
            asked,
            self.operators,
            self.membership.directory.by_identity,
            "audit records",
        )

    async def QueryAudit(
        self,
        request: audit_pb2.QueryAuditRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> audit_pb2.QueryAuditResponse:
        try:
            member = self._scope(context, request.member)
            where = audit_filter(request, member)
            entries = await self.store.aquery(where)  # never blocks the loop on the network
            return audit_pb2.QueryAuditResponse(records=[entry_to_pb(e) for e in entries])
        except ServiceError as error:
            await abort(context, error)
        except Exception:  # a bug: INTERNAL as Verify answers it, not gRPC's UNKNOWN
            log.exception("query audit failed unexpectedly")
            await abort(context, ServiceError(Reason.INTERNAL, "internal error in the hub"))


def _instant(stamp: timestamp_pb2.Timestamp) -> datetime | None:
    """The instant a Timestamp names, or None when it names none."""
    if not (_FIRST_SECOND <= stamp.seconds <= _LAST_SECOND and 0 <= stamp.nanos <= 999_999_999):
        return None
    return from_timestamp(stamp)


def audit_filter(request: audit_pb2.QueryAuditRequest, member: str) -> AuditFilter:
    """The filter a request asks for (`member`: whose records the caller may read), or
    INVALID_REQUEST naming every field that no audit record could match."""
    problems: list[FieldViolation] = []
    since = _instant(request.since) if request.HasField("since") else None
    if request.HasField("since") and since is None:
        problems.append(FieldViolation("since", f"must be {_TIME_RANGE}"))
    until = _instant(request.until) if request.HasField("until") else None
    if request.HasField("until") and until is None:
        problems.append(FieldViolation("until", f"must be {_TIME_RANGE}"))
    if member and not is_member_code(member):
        problems.append(FieldViolation("member", "must be a 3-digit member code, e.g. 014"))
    if request.trans_ref and not _TRANS_REF.fullmatch(request.trans_ref):
        problems.append(FieldViolation("trans_ref", "must be 1-32 ASCII letters and digits"))
    if request.request_id and not _REQUEST_ID.fullmatch(request.request_id):
        problems.append(
            FieldViolation(
                "request_id", f"must be 1-{MAX_REQUEST_ID} printable ASCII characters, no spaces"
            )
        )
    if not 0 <= request.limit <= MAX_LIMIT:
        problems.append(FieldViolation("limit", f"must be 1-{MAX_LIMIT} (0 = 100)"))
    if problems:
        raise ServiceError(
            Reason.INVALID_REQUEST,
            "; ".join(f"{p.field} {p.description}" for p in problems),
            metadata={"field": problems[0].field},
            violations=tuple(problems),
        )
    return AuditFilter(
        since=since,
        until=until,
        member=member,
        trans_ref=request.trans_ref,
        request_id=request.request_id,
        limit=request.limit or 100,
    )
