"""Forwarding to issuers: per issuer a reused channel, a deadline, a bulkhead and a circuit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc

from txverify.errors import Reason, ServiceError, details_of
from txverify.hub.registry import Member
from txverify.hub.resilience.breaker import BreakerSettings, CircuitBreaker, CircuitState
from txverify.hub.resilience.bulkhead import Bulkhead
from txverify.hub.settings import ISSUER_TIMEOUT, MAX_IN_FLIGHT
from txverify.v1 import common_pb2, issuer_pb2, issuer_pb2_grpc

if TYPE_CHECKING:
    from txverify.v1.issuer_pb2_grpc import IssuerServiceAsyncStub

log = logging.getLogger(__name__)

CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    # An issuer's answer is one masked transaction, well under 64 KiB; a cap
    # stops a misbehaving issuer from making the hub buffer megabytes.
    ("grpc.max_receive_message_length", 64 * 1024),
    # Reconnect quickly after an issuer restarts, without hammering a dead one
    # (gRPC's defaults start at 1 s and back off to 120 s).
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 5_000),
    # Each channel its own connections: by default gRPC shares a subchannel between
    # channels with the same target and options, and the fresh channel a watcher
    # makes when an issuer listens again (WATCH_EVERY) would inherit the old one's
    # reconnect backoff instead of connecting at once.
    ("grpc.use_local_subchannel_pool", 1),
    # Keepalive: a ping after 30 s without traffic notices a silently dead
    # peer (a pulled cable, a NAT that forgot us) long before a TCP timeout;
    # 10 s without the ping's answer closes the connection. No pings while
    # idle (no calls): issuer servers would treat them as abuse (GOAWAY).
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 0),
)
# A retried inquiry (first attempt never reached the issuer) may wait this long
# for the connection to come up, within the caller's budget.
RETRY_CONNECT_WAIT = 0.5
# While an issuer cannot be reached, its channel sits in gRPC's reconnect backoff
# (up to max_reconnect_backoff_ms, with jitter), which gRPC Python offers no way to
# cut short: a probe after the cooldown would wait for that channel and fail, and
# the circuit would stay open for another cooldown after the issuer is back. So from
# its first unreachable failure until it answers again, a watcher tries a bare TCP
# connect to the issuer's endpoint this often (one attempt at a time, none while it
# answers); once the port has refused and then accepted, a fresh channel, which
# connects at once, replaces the old one and, if the circuit is open, the probe goes
# through without waiting out the cooldown. The connect sends no byte: under mTLS
# too it only says the port listens.
WATCH_EVERY = 0.15
# An issuer down for longer than this is tried less often: ~2 connects a second
# instead of ~7, and still back within a second of listening.
WATCH_FAST_FOR, WATCH_EVERY_LATER = 30.0, 0.5
# A connect attempt that neither succeeds nor is refused (a host that drops SYNs)
# is given up after this long, and counts as "not listening".
WATCH_CONNECT_TIMEOUT = 1.0
_ISSUER_NOT_FOUND_REASONS = {Reason.SLIP_NOT_FOUND.value, Reason.SLIP_EXPIRED.value}
# Outcomes that say the issuer is unwell; the others (found, not found, bad
# request) prove it answers and close its circuit.
_FAILURES = {Reason.ISSUER_UNAVAILABLE, Reason.ISSUER_TIMEOUT, Reason.ISSUER_ERROR}

ChannelFactory = Callable[[Member], grpc.aio.Channel]


def insecure_channel(member: Member) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(member.issuer_endpoint, options=CHANNEL_OPTIONS)


@dataclass(frozen=True, slots=True)
class ForwardingPolicy:
    """How the hub treats issuers."""

    # Cap on one issuer inquiry, and what it gets when the caller set no deadline.
    issuer_timeout: float = ISSUER_TIMEOUT
    # Time kept back from the caller's deadline so the hub can still answer
    # with ISSUER_TIMEOUT before the caller gives up.
    margin: float = 0.05
    # Inquiries in flight per issuer; one more fails at once (bulkhead), so a
    # slow issuer cannot tie up the hub's capacity for the others.
    max_in_flight: int = MAX_IN_FLIGHT
    breaker: BreakerSettings = field(default_factory=BreakerSettings)

    def timeout(self, caller_remaining: float | None) -> float:
        if caller_remaining is None:
            return self.issuer_timeout
        return min(self.issuer_timeout, caller_remaining - self.margin)


@dataclass(slots=True)
class IssuerLink:
    """Everything the hub keeps per issuer."""

    endpoint: str
    identity: str
    channel: grpc.aio.Channel
    stub: IssuerServiceAsyncStub
    breaker: CircuitBreaker
    bulkhead: Bulkhead
    # Waits for the issuer to listen again while its circuit is open (WATCH_EVERY).
    watcher: asyncio.Task[None] | None = None


class IssuerGateway:
    """Sends IssuerInquiry to members over one reused channel per issuer."""

    def __init__(
        self,
        policy: ForwardingPolicy | None = None,
        *,
        channel_factory: ChannelFactory = insecure_channel,
        on_circuit_change: Callable[[str, CircuitState], None] | None = None,
    ) -> None:
        self.policy = policy or ForwardingPolicy()
        self._channel_factory = channel_factory
        self._on_circuit_change = on_circuit_change
        self._links: dict[str, IssuerLink] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False

    def _link(self, issuer: Member) -> IssuerLink:
        link = self._links.get(issuer.code)
        if link is not None and (link.endpoint, link.identity) == (
            issuer.issuer_endpoint,
            issuer.identity,
        ):
            return link
        if link is not None:  # the registry moved the issuer: new channel, fresh circuit
            self._stop_watching(link)
            self._close_later(link.channel)
        channel = self._channel_factory(issuer)
        link = IssuerLink(
            endpoint=issuer.issuer_endpoint,
            identity=issuer.identity,
            channel=channel,
            stub=issuer_pb2_grpc.IssuerServiceStub(channel),
            breaker=CircuitBreaker(
                issuer.code, self.policy.breaker, on_change=self._circuit_changed
            ),
            bulkhead=Bulkhead(issuer.code, self.policy.max_in_flight),
        )
        self._links[issuer.code] = link
        return link

    def _circuit_changed(self, name: str, old: CircuitState, new: CircuitState) -> None:
        log.warning("circuit to issuer %s: %s -> %s", name, old, new)
        if self._on_circuit_change is not None:
            self._on_circuit_change(name, new)

    def _close_later(self, channel: grpc.aio.Channel) -> None:
        # Calls still on the channel end by their own deadline (at most the issuer
        # timeout); one cancelled by the close would reach its caller as a cancellation.
        grace = self.policy.issuer_timeout + 1.0
        task = asyncio.get_running_loop().create_task(channel.close(grace=grace))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _renew_channel(self, link: IssuerLink, issuer: Member) -> None:
        """A fresh channel for the link (it connects at once, with no backoff to wait)."""
        old = link.channel
        link.channel = self._channel_factory(issuer)
        link.stub = issuer_pb2_grpc.IssuerServiceStub(link.channel)
        self._close_later(old)

    def _settle(
        self, link: IssuerLink, channel: grpc.aio.Channel, issuer: Member, failed: bool
    ) -> None:
        """Count a finished inquiry against the circuit; watch the issuer if it is unreachable."""
        if link.channel is not channel:
            # Sent on a channel replaced since: it says nothing about the new one, and
            # the replacement let a probe of its own through (_watch).
            return
        if not failed:
            link.breaker.record_success()
            return
        link.breaker.record_failure()
        # Watched from the first unreachable failure, not from when the circuit opens:
        # the circuit waits for failures spanning BreakerSettings.failing_seconds, and
        # an issuer back within that span would otherwise be found listening by a
        # watcher that never saw it refuse, and wait out the cooldown.
        if channel.get_state() is not grpc.ChannelConnectivity.READY:
            self._start_watching(link, issuer)

    def _start_watching(self, link: IssuerLink, issuer: Member) -> None:
        if self._closed or (link.watcher is not None and not link.watcher.done()):
            return
        address = _host_port(link.endpoint)
        if address is not None:
            link.watcher = asyncio.get_running_loop().create_task(
                self._watch(link, issuer, *address)
            )

    def _stop_watching(self, link: IssuerLink) -> asyncio.Task[None] | None:
        watcher, link.watcher = link.watcher, None
        if watcher is not None:
            watcher.cancel()
        return watcher

    async def _watch(self, link: IssuerLink, issuer: Member, host: str, port: int) -> None:
        """While the issuer is failing: once its port has refused and then accepts a
        connection, a fresh channel and, if the circuit is not closed, the probe at
        once (WATCH_EVERY).

        Only a refusal seen first arms it, so an issuer that accepts connections but
        fails or hangs gets no early probe and its circuit keeps the cooldown. One
        watch lets at most one probe through early; a probe that fails unreachable
        starts the next watch (_settle).
        """
        refused = False
        began = asyncio.get_running_loop().time()
        while True:
            listening = await _accepts(host, port)
            if (
                self._closed
                or self._links.get(issuer.code) is not link
                or not link.breaker.failing  # it answered on the old channel
            ):
                return
            if not listening:
                refused = True
            elif not refused:
                return  # it listened all along: up, but failing; the cooldown decides
            else:
                log.info("issuer %s listens again: new channel, probe now", issuer.code)
                self._renew_channel(link, issuer)
                link.breaker.probe_now()
                return
            late = asyncio.get_running_loop().time() - began > WATCH_FAST_FOR
            await asyncio.sleep(WATCH_EVERY_LATER if late else WATCH_EVERY)

    def circuit_state(self, code: str) -> CircuitState | None:
        link = self._links.get(code)
        return None if link is None else link.breaker.state

    def in_flight(self, code: str) -> int:
        link = self._links.get(code)
        return 0 if link is None else link.bulkhead.in_flight

    async def inquire(
        self,
        issuer: Member,
        slip: common_pb2.SlipRef,
        *,
        requester: str,
        request_id: str,
        budget: float,
        metadata: tuple[tuple[str, str], ...] | None = None,
    ) -> common_pb2.Transaction:
        """The issuer's masked transaction, or a ServiceError naming what went wrong.

        `metadata` goes with the inquiry (and its retry): the W3C trace headers when
        the request is traced (txverify.hub.tracing), else None."""
        if budget <= 0:
            raise ServiceError(Reason.ISSUER_TIMEOUT, "no time left before the caller's deadline")
        link = self._link(issuer)
        meta = {"issuer": issuer.code}
        if not link.breaker.allow():
            raise ServiceError(
                Reason.ISSUER_UNAVAILABLE,
                f"issuer {issuer.code} is failing; its circuit is open",
                metadata={**meta, "cause": "circuit_open"},
                retry_after=link.breaker.retry_after,
            )
        with link.bulkhead.slot() as admitted:
            if not admitted:
                link.breaker.record_ignored()
                raise ServiceError(
                    Reason.ISSUER_UNAVAILABLE,
                    f"issuer {issuer.code} has {link.bulkhead.limit} inquiries in flight",
                    metadata={**meta, "cause": "bulkhead"},
                )
            request = issuer_pb2.IssuerInquiryRequest(
                slip_ref=slip, requester=requester, request_id=request_id
            )
            channel = link.channel  # the one this inquiry goes out on
            try:
                response = await self._send(link, issuer, request, budget, metadata)
            except ServiceError as error:
                self._settle(link, channel, issuer, failed=error.reason in _FAILURES)
                raise
            except BaseException:  # cancelled by the caller: says nothing about the issuer
                if link.channel is channel:
                    link.breaker.record_ignored()
                raise
            self._settle(link, channel, issuer, failed=False)
        tx = response.transaction
        if tx.trans_ref != slip.trans_ref or tx.sending_bank != slip.sending_bank:
            if link.channel is channel:
                link.breaker.record_failure()
            raise ServiceError(
                Reason.ISSUER_ERROR,
                f"issuer {issuer.code} answered about another slip",
                metadata=meta,
            )
        return tx

    async def _send(
        self,
        link: IssuerLink,
        issuer: Member,
        request: issuer_pb2.IssuerInquiryRequest,
        budget: float,
        metadata: tuple[tuple[str, str], ...] | None,
    ) -> issuer_pb2.IssuerInquiryResponse:
        """One inquiry; retried once, only when the first attempt never reached the issuer."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        connected = link.channel.get_state() is grpc.ChannelConnectivity.READY
        stub = link.stub
        try:
            response: issuer_pb2.IssuerInquiryResponse = await stub.IssuerInquiry(
                request, timeout=budget, metadata=metadata
            )
            return response
        except grpc.aio.AioRpcError as error:
            remaining = deadline - loop.time()
            # A pending answer is UNAVAILABLE too, but it came from the issuer.
            never_sent = (
                error.code() is grpc.StatusCode.UNAVAILABLE
                and not connected
                and details_of(error).reason != Reason.SLIP_PENDING.value
            )
            if not never_sent or remaining <= 0:
                raise issuer_error(issuer, error) from None
        # The channel was not connected, so the request never left the hub:
        # sending it again cannot make the issuer answer twice. On the link's channel
        # now: a watcher may have replaced the first one meanwhile (closing it).
        channel, stub = link.channel, link.stub
        try:
            retried: issuer_pb2.IssuerInquiryResponse = await stub.IssuerInquiry(
                request,
                timeout=min(remaining, RETRY_CONNECT_WAIT),
                metadata=metadata,
                wait_for_ready=True,
            )
            return retried
        except grpc.aio.AioRpcError as error:
            # The retry's own channel: the link's may be a fresh one by now, READY
            # while this one still waits out its backoff.
            waited_for_connection = (
                remaining > RETRY_CONNECT_WAIT
                or channel.get_state() is not grpc.ChannelConnectivity.READY
            )
            if error.code() is grpc.StatusCode.DEADLINE_EXCEEDED and waited_for_connection:
                # The time ran out waiting for a connection (the issuer refuses or
                # is gone), not for the issuer's answer: unavailable, not slow.
                raise ServiceError(
                    Reason.ISSUER_UNAVAILABLE,
                    f"issuer {issuer.code} is unreachable",
                    metadata={"issuer": issuer.code, "issuer_status": "UNAVAILABLE"},
                ) from None
            raise issuer_error(issuer, error) from None

    async def close(self) -> None:
        self._closed = True
        watchers = [w for link in self._links.values() if (w := self._stop_watching(link))]
        await asyncio.gather(*watchers, return_exceptions=True)
        for link in self._links.values():
            await link.channel.close()
        self._links.clear()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


def _host_port(endpoint: str) -> tuple[str, int] | None:
    """host:port or [v6]:port (registry.py checks the form) as a host and a port."""
    host, _, port = endpoint.rpartition(":")
    if not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


async def _accepts(host: str, port: int) -> bool:
    """Whether a TCP connection to host:port is accepted (closed again at once, nothing sent)."""
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port), WATCH_CONNECT_TIMEOUT
        )
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def issuer_error(issuer: Member, error: grpc.aio.AioRpcError) -> ServiceError:
    """Map an issuer's failure to what the hub tells the requester (architecture.md table)."""
    details = details_of(error)
    status = details.status
    meta = {"issuer": issuer.code, "issuer_status": status.name}
    if details.reason == Reason.SLIP_PENDING.value:
        # The issuer answered (UNAVAILABLE is only how "later" travels): relayed
        # with its RetryInfo, and it proves the issuer well, as a not-found does.
        return ServiceError(
            Reason.SLIP_PENDING,
            details.message or "the transfer is not settled yet at the issuer",
            metadata=meta,
            retry_after=details.retry_after,
        )
    if status == grpc.StatusCode.NOT_FOUND:
        reason = (
            Reason(details.reason)
            if details.reason in _ISSUER_NOT_FOUND_REASONS
            else Reason.SLIP_NOT_FOUND
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
    if status in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
        # CANCELLED from an issuer: its server cancelled the call, i.e. it is stopping
        # (our own caller's cancellation never gets here: it cancels the await).
        return ServiceError(
            Reason.ISSUER_UNAVAILABLE, f"issuer {issuer.code} is unreachable", metadata=meta
        )
    return ServiceError(
        Reason.ISSUER_ERROR, f"issuer {issuer.code} failed with {status.name}", metadata=meta
    )
