"""Typed clients of the hub's VerificationService, synchronous and asyncio, with opt-in retries."""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import grpc

from txverify.client.channels import explain_refusal, hub_aio_channel, hub_channel
from txverify.client.errors import VerifyFailed, error_from_details
from txverify.errors import details_of
from txverify.runtime import tls
from txverify.v1 import (
    common_pb2,
    usage_pb2,
    usage_pb2_grpc,
    verification_pb2,
    verification_pb2_grpc,
)
from txverify.wire import MEMBER_HEADER

__all__ = [
    "DEFAULT_HUB",
    "MAX_BACKOFF",
    "MEMBER_HEADER",
    "AsyncTxVerifyClient",
    "SlipQuery",
    "TxVerifyClient",
    "VerifyFailed",
    "hub_aio_channel",
    "hub_channel",
    "retry_delay",
]

log = logging.getLogger(__name__)

DEFAULT_HUB = "localhost:50051"
MAX_BACKOFF = 10.0  # seconds: the longest computed wait between attempts (RetryInfo may ask more)
JITTER = 0.2  # each computed wait is spread +-20%, as gRPC's own connection backoff does


@dataclass(frozen=True, slots=True)
class SlipQuery:
    """Which slip to verify: QR text, sending bank and transRef, or an image of the slip
    (PNG, JPEG or WebP bytes, read by the hub)."""

    qr_text: str = ""
    sending_bank: str = ""
    trans_ref: str = ""
    image: bytes = field(default=b"", repr=False)

    def to_request(self, request_id: str) -> verification_pb2.VerifyRequest:
        if self.image:
            return verification_pb2.VerifyRequest(slip_image=self.image, request_id=request_id)
        if self.qr_text:
            return verification_pb2.VerifyRequest(qr_text=self.qr_text, request_id=request_id)
        return verification_pb2.VerifyRequest(
            slip_ref=common_pb2.SlipRef(sending_bank=self.sending_bank, trans_ref=self.trans_ref),
            request_id=request_id,
        )


def retry_delay(retried: int, backoff: float, retry_after: float | None = None) -> float:
    """Seconds to wait before sending again after `retried` retries (0 before the first).

    Exponential (backoff, 2 x backoff, 4 x backoff, ... at most MAX_BACKOFF), spread
    +-JITTER so that callers failed by the same outage do not come back in step; never
    less than the hub's RetryInfo asked for.
    """
    exponential = min(backoff * 2.0 ** min(retried, 64), MAX_BACKOFF)
    return max(exponential * random.uniform(1 - JITTER, 1 + JITTER), retry_after or 0.0)


class _Client:
    """What the sync and asyncio clients share: settings, request and retry decisions."""

    def __init__(self, *, member: str, timeout: float, retries: int, backoff: float) -> None:
        if retries < 0:
            raise ValueError("retries must be 0 or more")
        if backoff < 0:
            raise ValueError("backoff must be 0 or more seconds")
        self._metadata = ((MEMBER_HEADER, member),) if member else ()
        self._timeout = timeout
        self._retries = retries
        self._backoff = backoff

    @staticmethod
    def _request(
        query: SlipQuery,
        request_id: str,
        expect: verification_pb2.Expectations | None,
        reference: str,
    ) -> verification_pb2.VerifyRequest:
        # The id is made once per verify call, so every attempt carries the same
        # one and the hub's idempotency answers a resent success only once.
        request = query.to_request(request_id or uuid.uuid4().hex)
        if expect is not None:
            request.expect.CopyFrom(expect)
        request.requester_reference = reference
        return request

    def _wait_before_retry(
        self, error: VerifyFailed, retried: int, request: verification_pb2.VerifyRequest
    ) -> float | None:
        """Seconds to wait before the next attempt, or None to raise `error`."""
        if not error.retryable or retried >= self._retries:
            return None
        delay = retry_delay(retried, self._backoff, error.retry_after)
        log.info(
            "verify %s failed with %s; retry %d of %d in %.3fs",
            request.request_id,
            error.reason,
            retried + 1,
            self._retries,
            delay,
        )
        return delay


class TxVerifyClient(_Client):
    """Verify slips through a hub over one channel; use as a context manager.

    `member` is the caller's member code: sent in the dev-mode header, and
    with `certs` (a `txverify certs init` directory) its certificate is
    presented over mTLS, and the hub's is accepted only if it names
    hub.txverify (tls.HUB_DNS), whatever address `hub` is: a member's
    certificate never passes for the hub's (HubUnavailable, nothing sent).
    `timeout` bounds each attempt. With `retries` > 0 a
    retryable failure (`VerifyFailed.retryable`) is sent again, with the same
    request_id, up to `retries` more times after an exponential wait starting at
    `backoff` seconds (see retry_delay). `channel` replaces the channel the
    client would open (`hub` and `certs` are then unused); the client does not
    close a channel it was given.
    """

    def __init__(
        self,
        hub: str = DEFAULT_HUB,
        *,
        member: str = "",
        certs: Path | None = None,
        timeout: float = 10.0,
        retries: int = 0,
        backoff: float = 0.2,
        channel: grpc.Channel | None = None,
    ) -> None:
        super().__init__(member=member, timeout=timeout, retries=retries, backoff=backoff)
        if channel is not None and certs is not None:
            raise ValueError("give certs or a channel, not both")
        self._owns_channel = channel is None
        self._channel = (
            hub_channel(hub, certs=certs, identity=member) if channel is None else channel
        )
        self._stub = verification_pb2_grpc.VerificationServiceStub(self._channel)
        self._usage = usage_pb2_grpc.UsageServiceStub(self._channel)

    def usage(self, member: str = "") -> usage_pb2.GetUsageResponse:
        """This member's usage (verifications today and this month, not-found share, rate
        limit, tokens now); an operator names any `member`. Raises a VerifyFailed subclass."""
        try:
            response: usage_pb2.GetUsageResponse = self._usage.GetUsage(
                usage_pb2.GetUsageRequest(member=member),
                timeout=self._timeout,
                metadata=self._metadata,
            )
        except grpc.RpcError as rpc_error:
            raise error_from_details(explain_refusal(details_of(rpc_error), tls.HUB_DNS)) from None
        return response

    def verify(
        self,
        query: SlipQuery,
        *,
        request_id: str = "",
        expect: verification_pb2.Expectations | None = None,
        reference: str = "",
    ) -> verification_pb2.VerifyResponse:
        """The hub's answer (transaction, checks, verdict, duplicates); raises a VerifyFailed
        subclass naming the reason (txverify.client.errors).

        A request id is made when none is given; pass your own to retry safely
        yourself (the hub answers a repeated id with the first answer, counted once).
        """
        request = self._request(query, request_id, expect, reference)
        retried = 0
        while True:
            try:
                response: verification_pb2.VerifyResponse = self._stub.Verify(
                    request, timeout=self._timeout, metadata=self._metadata
                )
                return response
            except grpc.RpcError as rpc_error:
                error = error_from_details(explain_refusal(details_of(rpc_error), tls.HUB_DNS))
            delay = self._wait_before_retry(error, retried, request)
            if delay is None:
                raise error
            time.sleep(delay)
            retried += 1

    def close(self) -> None:
        if self._owns_channel:
            self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncTxVerifyClient(_Client):
    """TxVerifyClient for asyncio (grpc.aio): the same arguments, exceptions and retries;
    use with `async with`. Create it inside the event loop that will use it."""

    def __init__(
        self,
        hub: str = DEFAULT_HUB,
        *,
        member: str = "",
        certs: Path | None = None,
        timeout: float = 10.0,
        retries: int = 0,
        backoff: float = 0.2,
        channel: grpc.aio.Channel | None = None,
    ) -> None:
        super().__init__(member=member, timeout=timeout, retries=retries, backoff=backoff)
        if channel is not None and certs is not None:
            raise ValueError("give certs or a channel, not both")
        self._owns_channel = channel is None
        self._channel = (
            hub_aio_channel(hub, certs=certs, identity=member) if channel is None else channel
        )
        self._stub = verification_pb2_grpc.VerificationServiceStub(self._channel)
        self._usage = usage_pb2_grpc.UsageServiceStub(self._channel)

    async def usage(self, member: str = "") -> usage_pb2.GetUsageResponse:
        """As TxVerifyClient.usage."""
        try:
            response: usage_pb2.GetUsageResponse = await self._usage.GetUsage(
                usage_pb2.GetUsageRequest(member=member),
                timeout=self._timeout,
                metadata=self._metadata,
            )
        except grpc.RpcError as rpc_error:
            raise error_from_details(explain_refusal(details_of(rpc_error), tls.HUB_DNS)) from None
        return response

    async def verify(
        self,
        query: SlipQuery,
        *,
        request_id: str = "",
        expect: verification_pb2.Expectations | None = None,
        reference: str = "",
    ) -> verification_pb2.VerifyResponse:
        """As TxVerifyClient.verify; waits between attempts with asyncio.sleep."""
        request = self._request(query, request_id, expect, reference)
        retried = 0
        while True:
            try:
                response: verification_pb2.VerifyResponse = await self._stub.Verify(
                    request, timeout=self._timeout, metadata=self._metadata
                )
                return response
            except grpc.RpcError as rpc_error:
                error = error_from_details(explain_refusal(details_of(rpc_error), tls.HUB_DNS))
            delay = self._wait_before_retry(error, retried, request)
            if delay is None:
                raise error
            await asyncio.sleep(delay)
            retried += 1

    async def close(self) -> None:
        if self._owns_channel:
            await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
