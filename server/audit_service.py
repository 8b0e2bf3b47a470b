"""AuditLog: reading the audit trail over gRPC; operators see all, members only their own."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import grpc

from server.audit import AuditEntry, AuditFilter, AuditStore
from server.identity import IdentityMode, identify
from server.membership import Membership
from txverify.errors import Reason, ServiceError, abort
from txverify.units import from_timestamp, to_timestamp
from txverify.v1 import audit_pb2, audit_pb2_grpc

MAX_LIMIT = 10_000


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
        caller = identify(context, self.mode)
        if caller.identity in self.operators:
            return asked
        member = self.membership.directory.by_identity(caller.identity)
        if member is None:
            raise ServiceError(Reason.UNKNOWN_MEMBER, "not a member of the service")
        if asked and asked != member.code:
            raise ServiceError(Reason.NOT_OPERATOR, "a member may read only its own audit records")
        return member.code

    async def QueryAudit(
        self,
        request: audit_pb2.QueryAuditRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> audit_pb2.QueryAuditResponse:
        try:
            member = self._scope(context, request.member)
            if not 0 <= request.limit <= MAX_LIMIT:
                raise ServiceError(
                    Reason.INVALID_REQUEST,
                    f"limit must be 1-{MAX_LIMIT} (0 = 100)",
                    metadata={"field": "limit"},
                )
            where = AuditFilter(
                since=from_timestamp(request.since) if request.HasField("since") else None,
                until=from_timestamp(request.until) if request.HasField("until") else None,
                member=member,
                trans_ref=request.trans_ref,
                request_id=request.request_id,
                limit=request.limit or 100,
            )
            entries = await self.store.aquery(where)  # never blocks the loop on the network
        except ServiceError as error:
            await abort(context, error)
        return audit_pb2.QueryAuditResponse(records=[entry_to_pb(e) for e in entries])
