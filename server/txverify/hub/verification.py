"""VerificationService: the gRPC adapter over the Router (which audits and observes)."""

from __future__ import annotations

from functools import partial
from typing import Any

import grpc

from txverify.errors import ServiceError, abort
from txverify.hub.identity import IdentityMode, identify, verify_headers
from txverify.hub.router import Router
from txverify.hub.tracing import parse
from txverify.v1 import verification_pb2, verification_pb2_grpc


class VerificationServicer(verification_pb2_grpc.VerificationServiceServicer):
    """Thin adapter: identity, trace context and deadline in, VerifyResponse or rich status out."""

    def __init__(self, router: Router, mode: IdentityMode) -> None:
        self.router = router
        self.mode = mode

    async def Verify(
        self,
        request: verification_pb2.VerifyRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> verification_pb2.VerifyResponse:
        claimed, traceparent, tracestate = verify_headers(context)  # one pass
        trace = None if traceparent is None else parse(traceparent, tracestate)
        try:
            return await self.router.verify(
                request,
                partial(identify, context, self.mode, claimed),
                context.time_remaining(),
                trace,
            )
        except ServiceError as error:  # audited, logged and counted by the Router
            await abort(context, error)
