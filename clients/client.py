"""A small synchronous client of the hub's VerificationService."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import grpc

from txverify import tls
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


def hub_channel(hub: str, *, certs: Path | None = None, identity: str = "") -> grpc.Channel:
    """A channel to the hub: mTLS with `identity`'s certificate from `certs`, else plaintext
    (dev mode, where the hub trusts loopback callers to name themselves)."""
    if certs is None:
        return grpc.insecure_channel(hub)
    if not identity:
        raise ValueError("mTLS needs the identity whose certificate to present")
    pki = tls.Pki(certs)
    return grpc.secure_channel(hub, tls.channel_credentials(pki, identity))


class TxVerifyClient:
    """Verify slips through a hub over one channel; use as a context manager.

    `member` is the caller's member code: sent in the dev-mode header, and
    with `certs` (a `txverify certs init` directory) its certificate is
    presented over mTLS.
    """

    def __init__(
        self,
        hub: str = DEFAULT_HUB,
        *,
        member: str = "",
        certs: Path | None = None,
        timeout: float = 10.0,
    ) -> None:
        self._channel = hub_channel(hub, certs=certs, identity=member)
        self._stub = verification_pb2_grpc.VerificationServiceStub(self._channel)
        self._metadata = ((MEMBER_HEADER, member),) if member else ()
        self._timeout = timeout

    def verify(
        self,
        query: SlipQuery,
        *,
        request_id: str = "",
        expect: verification_pb2.Expectations | None = None,
        reference: str = "",
    ) -> verification_pb2.VerifyResponse:
        """The hub's answer (transaction, checks, verdict, duplicates); raises VerifyFailed.

        A request id is made when none is given; pass your own to retry safely
        (the hub answers a repeated id with the first answer, counted once).
        """
        request = query.to_request(request_id or uuid.uuid4().hex)
        if expect is not None:
            request.expect.CopyFrom(expect)
        request.requester_reference = reference
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
