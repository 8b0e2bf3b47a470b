"""VerificationService: the gRPC adapter over the Router, with one log line per RPC."""

from __future__ import annotations

import logging
import time
from typing import Any

import grpc

from server.identity import IdentityMode, identify
from server.router import Router
from txverify.errors import Reason, ServiceError, abort
from txverify.logs import FIELDS
from txverify.v1 import verification_pb2, verification_pb2_grpc

log = logging.getLogger(__name__)


class VerificationServicer(verification_pb2_grpc.VerificationServiceServicer):
    """Thin adapter: metadata and deadline in, VerifyResponse or rich status out."""

    def __init__(self, router: Router, mode: IdentityMode) -> None:
        self.router = router
        self.mode = mode

    async def Verify(
        self,
        request: verification_pb2.VerifyRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> verification_pb2.VerifyResponse:
        started = time.perf_counter()
        fields: dict[str, str] = {}
        try:
            caller = identify(context, self.mode)
            fields["caller"] = caller.identity[:64]
            response = await self.router.verify(
                request,
                caller=caller,
                caller_remaining=context.time_remaining(),
                outcome=fields,
            )
        except ServiceError as error:
            _log_line(fields, error.status_code.name, error.reason.value, started)
            await abort(context, error)
        except Exception:
            log.exception("verify failed unexpectedly", extra={FIELDS: fields})
            _log_line(fields, grpc.StatusCode.INTERNAL.name, Reason.INTERNAL.value, started)
            await abort(context, ServiceError(Reason.INTERNAL, "internal error in the hub"))
        _log_line(fields, "OK", "", started)
        return response


def _log_line(fields: dict[str, str], status: str, reason: str, started: float) -> None:
    log.info(
        "verify",
        extra={
            FIELDS: {
                **fields,
                "status": status,
                "reason": reason,
                "latency_ms": round((time.perf_counter() - started) * 1000, 2),
            }
        },
    )
