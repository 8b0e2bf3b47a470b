"""The Verify request path: admit the caller, decode the slip, find the issuer, forward, answer."""

from __future__ import annotations

import uuid

from server.admission import Admission
from server.forwarding import IssuerGateway
from server.identity import Caller
from server.slip import slip_of
from txverify.errors import FieldViolation, Reason, ServiceError
from txverify.v1 import verification_pb2

MAX_REQUEST_ID = 64


class Router:
    """Answers Verify requests; knows nothing of gRPC servers."""

    def __init__(self, admission: Admission, gateway: IssuerGateway) -> None:
        self.admission = admission
        self.gateway = gateway

    async def verify(
        self,
        request: verification_pb2.VerifyRequest,
        *,
        caller: Caller,
        caller_remaining: float | None,
        outcome: dict[str, str],
    ) -> verification_pb2.VerifyResponse:
        """Verify one slip; fills `outcome` (for the log line) as it learns things."""
        requester = self.admission.requester(caller)
        outcome["requester"] = requester.code
        request_id = checked_request_id(request.request_id)
        outcome["request_id"] = request_id
        slip = slip_of(request)
        outcome["issuer"] = slip.sending_bank
        outcome["trans_ref"] = slip.trans_ref
        issuer = self.admission.issuer(slip.sending_bank)
        tx = await self.gateway.inquire(
            issuer,
            slip,
            requester=requester.code,
            request_id=request_id,
            budget=self.gateway.policy.timeout(caller_remaining),
        )
        return verification_pb2.VerifyResponse(transaction=tx, request_id=request_id)


def checked_request_id(request_id: str) -> str:
    """The caller's request id if well-formed, a new one if empty."""
    if not request_id:
        return uuid.uuid4().hex
    if len(request_id) > MAX_REQUEST_ID or not all("!" <= ch <= "~" for ch in request_id):
        raise ServiceError(
            Reason.INVALID_REQUEST,
            f"request_id must be 1-{MAX_REQUEST_ID} printable ASCII characters without spaces",
            metadata={"field": "request_id"},
            violations=(FieldViolation("request_id", "1-64 printable ASCII, no spaces"),),
        )
    return request_id
