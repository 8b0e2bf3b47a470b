"""Forwarding inquiries to issuers: one reused channel per issuer, deadlines, error mapping."""

from __future__ import annotations

import grpc

from server.registry import Member
from txverify.errors import Reason, ServiceError, details_of
from txverify.v1 import common_pb2, issuer_pb2, issuer_pb2_grpc

CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    # An issuer's answer is one masked transaction, well under 64 KiB; a cap
    # stops a misbehaving issuer from making the hub buffer megabytes.
    ("grpc.max_receive_message_length", 64 * 1024),
    # Reconnect quickly after an issuer restarts, without hammering a dead one
    # (gRPC's defaults start at 1 s and back off to 120 s).
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 5_000),
)
_ISSUER_NOT_FOUND_REASONS = {Reason.SLIP_NOT_FOUND.value, Reason.SLIP_EXPIRED.value}


class IssuerGateway:
    """Sends IssuerInquiry to members, reusing one channel per issuer endpoint."""

    def __init__(self) -> None:
        self._stubs: dict[str, issuer_pb2_grpc.IssuerServiceAsyncStub] = {}
        self._channels: dict[str, grpc.aio.Channel] = {}

    def _stub(self, endpoint: str) -> issuer_pb2_grpc.IssuerServiceAsyncStub:
        stub = self._stubs.get(endpoint)
        if stub is None:
            channel = grpc.aio.insecure_channel(endpoint, options=CHANNEL_OPTIONS)
            self._channels[endpoint] = channel
            stub = self._stubs[endpoint] = issuer_pb2_grpc.IssuerServiceStub(channel)
        return stub

    async def inquire(
        self,
        issuer: Member,
        slip: common_pb2.SlipRef,
        *,
        requester: str,
        request_id: str,
        budget: float,
    ) -> common_pb2.Transaction:
        """The issuer's masked transaction, or a ServiceError naming what went wrong."""
        if budget <= 0:
            raise ServiceError(Reason.ISSUER_TIMEOUT, "no time left before the caller's deadline")
        request = issuer_pb2.IssuerInquiryRequest(
            slip_ref=slip, requester=requester, request_id=request_id
        )
        try:
            response: issuer_pb2.IssuerInquiryResponse = await self._stub(
                issuer.issuer_endpoint
            ).IssuerInquiry(request, timeout=budget)
        except grpc.aio.AioRpcError as error:
            raise issuer_error(issuer, error) from None
        tx = response.transaction
        if tx.trans_ref != slip.trans_ref or tx.sending_bank != slip.sending_bank:
            raise ServiceError(
                Reason.ISSUER_ERROR,
                f"issuer {issuer.code} answered about another slip",
                metadata={"issuer": issuer.code},
            )
        return tx

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
        self._stubs.clear()


def issuer_error(issuer: Member, error: grpc.aio.AioRpcError) -> ServiceError:
    """Map an issuer's failure to what the hub tells the requester (architecture.md table)."""
    details = details_of(error)
    status = details.status
    meta = {"issuer": issuer.code, "issuer_status": status.name}
    if status == grpc.StatusCode.NOT_FOUND:
        reason = (
            Reason(details.reason)
            if details.reason in _ISSUER_NOT_FOUND_REASONS
            else (Reason.SLIP_NOT_FOUND)
        )
        return ServiceError(
            reason, details.message or "slip not found at the issuer", metadata=meta
        )
    if status == grpc.StatusCode.INVALID_ARGUMENT:
        return ServiceError(
            Reason.INVALID_REQUEST,
            f"issuer {issuer.code} refused the request: {details.message}",
            metadata=meta,
            code=details.code or "8400",
        )
    if status == grpc.StatusCode.DEADLINE_EXCEEDED:
        return ServiceError(
            Reason.ISSUER_TIMEOUT, f"issuer {issuer.code} did not answer in time", metadata=meta
        )
    if status == grpc.StatusCode.UNAVAILABLE:
        return ServiceError(
            Reason.ISSUER_UNAVAILABLE, f"issuer {issuer.code} is unreachable", metadata=meta
        )
    return ServiceError(
        Reason.ISSUER_ERROR, f"issuer {issuer.code} failed with {status.name}", metadata=meta
    )
