"""UsageService: a member's own usage (today, this month, not-found share, rate limit, tokens).

Counted from the audit store, not from counters in memory: the audit holds
every admitted Verify of every hub process (workers, replicas on one
PostgreSQL) and survives restarts, so the figures are the same whichever
process answers; in-memory counters would be one process's share since its
start. The count is one range scan of the requester index (`audit_requester`,
requester and time), run off the event loop (a thread on SQLite, the async
pool on PostgreSQL), only when asked: nothing is added to Verify. The tokens
are the live bucket's (this process's, or the shared one in Redis).
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any

import grpc

from txverify.banks import is_member_code
from txverify.errors import FieldViolation, Reason, ServiceError, abort
from txverify.hub.admission import Admission
from txverify.hub.audit import AuditStore, MemberUsage
from txverify.hub.identity import IdentityMode, identify, readable_member
from txverify.units import BANGKOK, to_timestamp
from txverify.v1 import usage_pb2, usage_pb2_grpc

log = logging.getLogger(__name__)


def periods(now: datetime) -> tuple[datetime, datetime]:
    """The starts of `now`'s Bangkok month and day, as instants."""
    local = now.astimezone(BANGKOK)
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    return day.replace(day=1), day


def counts(verifications: int, not_found: int) -> usage_pb2.UsageCounts:
    ratio = not_found / verifications if verifications else 0.0
    return usage_pb2.UsageCounts(
        verifications=verifications, not_found=not_found, not_found_ratio=ratio
    )


class UsageServicer(usage_pb2_grpc.UsageServiceServicer):
    """Thin adapter: who may read whose usage, the audit's counts and the live bucket."""

    def __init__(
        self,
        store: AuditStore,
        admission: Admission,
        *,
        mode: IdentityMode,
        operators: Collection[str],
    ) -> None:
        self.store = store
        self.admission = admission
        self.mode = mode
        self.operators = frozenset(operators)

    def _whose(self, context: grpc.aio.ServicerContext[Any, Any], asked: str) -> str:
        """The member whose usage the caller may read: its own, or any for an operator."""
        caller = identify(context, self.mode)
        if asked and not is_member_code(asked):
            raise ServiceError(
                Reason.INVALID_REQUEST,
                "member must be a 3-digit member code, e.g. 014",
                metadata={"field": "member"},
                violations=(FieldViolation("member", "a 3-digit member code"),),
            )
        whose = readable_member(
            caller,
            asked,
            self.operators,
            self.admission.membership.directory.by_identity,
            "usage",
        )
        if not whose:  # an operator, who has no usage of its own
            raise ServiceError(
                Reason.INVALID_REQUEST,
                "an operator names the member whose usage to read",
                metadata={"field": "member"},
                violations=(FieldViolation("member", "required for an operator"),),
            )
        return whose

    async def GetUsage(
        self,
        request: usage_pb2.GetUsageRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> usage_pb2.GetUsageResponse:
        try:
            member = self._whose(context, request.member)
            return await self.usage(member, datetime.now(UTC))
        except ServiceError as error:
            await abort(context, error)
        except Exception:  # a bug: INTERNAL as Verify answers it, not gRPC's UNKNOWN
            log.exception("get usage failed unexpectedly")
            await abort(context, ServiceError(Reason.INTERNAL, "internal error in the hub"))

    async def usage(self, member: str, now: datetime) -> usage_pb2.GetUsageResponse:
        """`member`'s usage at `now` (whoever may read it)."""
        month, day = periods(now)
        used: MemberUsage = await self.store.ausage(member, month, day)
        limiter = self.admission.limiter
        limit = limiter.limit_for(member)
        tokens = await limiter.tokens(member)
        return usage_pb2.GetUsageResponse(
            member=member,
            today=counts(used.today, used.today_not_found),
            this_month=counts(used.month, used.month_not_found),
            rate_limit=usage_pb2.RateLimitInfo(
                rate=limit.rate if limit else 0.0, burst=limit.burst if limit else 0
            ),
            tokens=tokens or 0.0,
            not_found_cost=self.admission.not_found_cost,
            day_start=to_timestamp(day),
            month_start=to_timestamp(month),
        )
