"""VerificationService: the gRPC adapter over the Router; every outcome audited and logged once."""

from __future__ import annotations

import logging
import time
from typing import Any

import grpc

from server.audit import BatchItem
from server.auditlog import Announcement, AuditWriter
from server.console.feed import LiveFeed
from server.identity import IdentityMode, identify
from server.metrics import Metrics
from server.router import Router, audit_entry
from txverify.errors import Reason, ServiceError, abort
from txverify.logs import FIELDS
from txverify.v1 import verification_pb2, verification_pb2_grpc

log = logging.getLogger(__name__)


class VerificationServicer(verification_pb2_grpc.VerificationServiceServicer):
    """Thin adapter: identity and deadline in, VerifyResponse or rich status out."""

    def __init__(
        self,
        router: Router,
        mode: IdentityMode,
        audit: AuditWriter,
        metrics: Metrics,
        feed: LiveFeed | None = None,
    ) -> None:
        self.router = router
        self.mode = mode
        self.audit = audit
        self.metrics = metrics
        self.feed = feed  # the console's live view, when it is on

    async def Verify(
        self,
        request: verification_pb2.VerifyRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> verification_pb2.VerifyResponse:
        started = time.perf_counter()
        fields: dict[str, str] = {}
        announcement = self.audit.announce()
        try:
            return await self._verify(request, context, fields, started, announcement)
        finally:
            announcement.release()

    async def _verify(
        self,
        request: verification_pb2.VerifyRequest,
        context: grpc.aio.ServicerContext[Any, Any],
        fields: dict[str, str],
        started: float,
        announcement: Announcement,
    ) -> verification_pb2.VerifyResponse:
        try:
            caller = identify(context, self.mode)
            fields["caller"] = caller.identity[:64]
            response = await self.router.verify(
                request,
                caller=caller,
                caller_remaining=context.time_remaining(),
                outcome=fields,
                started=started,
                announcement=announcement,
            )
        except ServiceError as error:
            answer = await self._audited(error, fields, started, announcement)
            self._done(fields, answer.status_code.name, answer.reason.value, started)
            await abort(context, answer)
        except Exception:
            log.exception("verify failed unexpectedly", extra={FIELDS: fields})
            answer = await self._audited(
                ServiceError(Reason.INTERNAL, "internal error in the hub"),
                fields,
                started,
                announcement,
            )
            self._done(fields, answer.status_code.name, answer.reason.value, started)
            await abort(context, answer)
        fields["verdict"] = verification_pb2.Verdict.Name(response.verdict).removeprefix("VERDICT_")
        self._done(fields, "OK", "", started)
        return response

    async def _audited(
        self,
        error: ServiceError,
        fields: dict[str, str],
        started: float,
        announcement: Announcement,
    ) -> ServiceError:
        """Record a failure before answering it; if even that fails, say so instead."""
        if error.reason is Reason.AUDIT_UNAVAILABLE:
            return error
        entry = audit_entry(fields, started, error.status_code.name, error.reason.value)
        try:
            await self.audit.write(BatchItem(entry), announcement)
        except ServiceError as audit_error:
            return audit_error
        return error

    def _done(self, fields: dict[str, str], status: str, reason: str, started: float) -> None:
        elapsed = time.perf_counter() - started
        self.metrics.verified(fields.get("issuer", ""), status, reason, elapsed)
        if self.feed is not None:
            self.feed.record(fields, status, reason, elapsed)
        log.info(
            "verify",
            extra={
                FIELDS: {
                    **fields,
                    "status": status,
                    "reason": reason,
                    "latency_ms": round(elapsed * 1000, 2),
                }
            },
        )
