"""A small synchronous client of the hub's VerificationService."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import grpc

from txverify.errors import ErrorDetails, details_of
from txverify.v1 import common_pb2, verification_pb2, verification_pb2_grpc

DEFAULT_HUB = "localhost:50051"
MEMBER_HEADER = "x-member-id"


class VerifyFailed(Exception):
    """The hub answered with an error; `details` holds status, reason and code."""

    def __init__(self, details: ErrorDetails) -> None:
        super().__init__(details.message)
        self.details = details

    @property
    def reason(self) -> str:
        return self.details.reason or self.details.status.name


@dataclass(frozen=True, slots=True)
class SlipQuery:
    """Which slip to verify: QR text, or sending bank and transRef."""

    qr_text: str = ""
    sending_bank: str = ""
    trans_ref: str = ""

    def to_request(self, request_id: str) -> verification_pb2.VerifyRequest:
        if self.qr_text:
            return verification_pb2.VerifyRequest(qr_text=self.qr_text, request_id=request_id)
        return verification_pb2.VerifyRequest(
            slip_ref=common_pb2.SlipRef(sending_bank=self.sending_bank, trans_ref=self.trans_ref),
            request_id=request_id,
        )


class TxVerifyClient:
    """Verify slips through a hub over one channel; use as a context manager."""

    def __init__(self, hub: str = DEFAULT_HUB, *, member: str = "", timeout: float = 10.0) -> None:
        self._channel = grpc.insecure_channel(hub)
        self._stub = verification_pb2_grpc.VerificationServiceStub(self._channel)
        self._metadata = ((MEMBER_HEADER, member),) if member else ()
        self._timeout = timeout

    def verify(self, query: SlipQuery, *, request_id: str = "") -> verification_pb2.VerifyResponse:
        """The verified transaction; raises VerifyFailed with the hub's reason."""
        request = query.to_request(request_id or uuid.uuid4().hex)
        try:
            response: verification_pb2.VerifyResponse = self._stub.Verify(
                request, timeout=self._timeout, metadata=self._metadata
            )
        except grpc.RpcError as error:
            raise VerifyFailed(details_of(error)) from None
        return response

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> TxVerifyClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
