"""The Verify request path: decode the slip, find the issuer, forward, answer."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from server.forwarding import IssuerGateway
from server.registry import MemberDirectory
from server.slip import slip_of
from txverify.errors import FieldViolation, Reason, ServiceError
from txverify.v1 import common_pb2, verification_pb2

MAX_REQUEST_ID = 64


@dataclass(frozen=True, slots=True)
class ForwardingPolicy:
    """How long the hub gives an issuer."""

    # Cap on one issuer inquiry, and what it gets when the caller set no deadline.
    issuer_timeout: float = 5.0
    # Time kept back from the caller's deadline so the hub can still answer
    # with ISSUER_TIMEOUT before the caller gives up.
    margin: float = 0.05

    def timeout(self, caller_remaining: float | None) -> float:
        if caller_remaining is None:
            return self.issuer_timeout
        return min(self.issuer_timeout, caller_remaining - self.margin)


class Router:
    """Answers Verify requests; knows nothing of gRPC servers."""

    def __init__(
        self,
        directory: MemberDirectory,
        gateway: IssuerGateway,
        policy: ForwardingPolicy | None = None,
    ) -> None:
        self.directory = directory
        self.gateway = gateway
        self.policy = policy or ForwardingPolicy()

    async def verify(
        self,
        request: verification_pb2.VerifyRequest,
        *,
        requester: str,
        caller_remaining: float | None,
        outcome: dict[str, str],
    ) -> verification_pb2.VerifyResponse:
        """Verify one slip; fills `outcome` (for the log line) as it learns things."""
        request_id = checked_request_id(request.request_id)
        outcome["request_id"] = request_id
        slip = slip_of(request)
        outcome["issuer"] = slip.sending_bank
        outcome["trans_ref"] = slip.trans_ref
        issuer = self.directory.get(slip.sending_bank)
        if issuer is None or not issuer.issuer_endpoint:
            raise ServiceError(
                Reason.ISSUER_NOT_FOUND,
                f"bank {slip.sending_bank} is not a member issuer of slip verification",
                metadata={"issuer": slip.sending_bank},
            )
        tx: common_pb2.Transaction = await self.gateway.inquire(
            issuer,
            slip,
            requester=requester,
            request_id=request_id,
            budget=self.policy.timeout(caller_remaining),
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
