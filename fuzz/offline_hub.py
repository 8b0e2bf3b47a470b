"""The real hub servicers and simulated banks wired together in-process, without sockets.

Fuzz targets need the code under test in their own process (atheris follows
coverage there), so the parts gRPC would connect are joined by stand-ins: a
servicer context that records how an RPC was aborted, and an issuer channel
that hands the hub's inquiry, serialized, to a simulated bank's IssuerServicer
in the same event loop. Everything else is the production code: identity,
admission, routing, slip decoding, expectation checks, the forwarding gateway
(bulkhead, circuit breaker, error mapping), the audit writer on SQLite, and the
banks' inquiry handling and masking. The MemberRegistry and AuditLog servicers
are the production ones too: AuditLog reads the audit the Verify calls wrote;
MemberRegistry changes a registry of its own (the same members, on its own SQLite),
so that what the registry target does never changes what Verify sees, and which
`reset_registry` puts back as it was whenever a call changed it.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import grpc

from txverify.hub.admission import Admission, member_rate_limit
from txverify.hub.audit.service import AuditLogServicer
from txverify.hub.audit.stores import open_audit_store
from txverify.hub.audit.writer import AuditWriter
from txverify.hub.forwarding import ForwardingPolicy, IssuerGateway
from txverify.hub.identity import IdentityMode
from txverify.hub.membership import Membership
from txverify.hub.metrics import Metrics
from txverify.hub.registry import Member, MemberKind, MemberStatus, with_default_roles
from txverify.hub.registry.service import MemberRegistryServicer
from txverify.hub.registry.store import open_registry_store
from txverify.hub.resilience.ratelimit import RateLimiter
from txverify.hub.router import Router
from txverify.hub.verification import VerificationServicer
from txverify.simulators.bank import Bank
from txverify.simulators.faults import FaultSpec
from txverify.simulators.issuer import IssuerServicer
from txverify.simulators.ledger import StoredSlip
from txverify.simulators.ledger_stores import open_ledger
from txverify.simulators.profiles import profile
from txverify.simulators.seed import seed_ledger
from txverify.v1 import audit_pb2, issuer_pb2, verification_pb2

# The banks' clock is fixed, so a seeded ledger (and so the seed corpus, and any
# crash found) is the same on every run; a week back from it some slips are expired.
BANK_NOW = datetime(2026, 1, 15, 5, 0, tzinfo=UTC)
TRANSACTIONS = 20  # seeded per simulated bank
LOOPBACK_PEER = "ipv4:127.0.0.1:40000"
REMOTE_PEER = "ipv4:192.0.2.7:40000"
NO_FAULTS = FaultSpec()
# Simulated issuers; the e-wallet (900) is a non-bank.
SIMULATED = ("014", "004", "900")
# Members with their own story: 002 only asks (no issuer endpoint); 006 is suspended;
# 025 is an issuer whose bank is down (every inquiry finds it UNAVAILABLE).
REQUESTER_ONLY = "002"
SUSPENDED = "006"
DOWN = "025"
OPERATOR = "operator"  # the hub's operator identity (txverify.runtime.tls.OPERATOR)
# The loggers of the servicers that answer INTERNAL on a bug (after logging it).
SERVICER_LOGGERS = (
    "txverify.hub.verification",
    "txverify.hub.registry.service",
    "txverify.hub.audit.service",
)
# What a Verify may end with: anything but INTERNAL and UNKNOWN (tests/test_fuzz_hub.py).
ALLOWED = frozenset(
    {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    }
)


def grpc_text(raw: bytes) -> str:
    """Bytes as gRPC Python hands metadata text to a servicer: UTF-8, else Latin-1."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


class FakeContext:
    """Stands in for grpc.aio.ServicerContext: what the servicers read, and abort()."""

    def __init__(
        self,
        *,
        metadata: Sequence[tuple[str, str | bytes]] = (),
        peer: str = LOOPBACK_PEER,
        common_names: Sequence[bytes] = (),
        remaining: float | None = None,
    ) -> None:
        self._metadata = tuple(metadata)
        self._peer = peer
        self._auth: dict[str, list[bytes]] = (
            {"x509_common_name": list(common_names)} if common_names else {}
        )
        self._remaining = remaining
        self.code = grpc.StatusCode.OK
        self.details = ""
        self.trailing: tuple[tuple[str, str | bytes], ...] = ()

    def invocation_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return self._metadata

    def peer(self) -> str:
        return self._peer

    def auth_context(self) -> dict[str, list[bytes]]:
        return self._auth

    def time_remaining(self) -> float | None:
        return self._remaining

    async def abort(
        self,
        code: grpc.StatusCode,
        details: str = "",
        trailing_metadata: Sequence[tuple[str, str | bytes]] = (),
    ) -> None:
        self.code = code
        self.details = details
        self.trailing = tuple(trailing_metadata)
        # The exception grpc.aio raises from abort(), so handlers see what they would.
        raise grpc.aio.AbortError()

    def as_grpc(self) -> grpc.aio.ServicerContext[Any, Any]:
        return cast("grpc.aio.ServicerContext[Any, Any]", self)


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one RPC ended: its status, and the response when OK."""

    code: grpc.StatusCode
    details: str
    trailing: tuple[tuple[str, str | bytes], ...] = ()
    response: Any = None


class _Failures(logging.Handler):
    """Keeps the exception the hub logged when it answered INTERNAL, to re-raise it."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.caught: BaseException | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            self.caught = record.exc_info[1]


async def _run(call: Callable[[], Awaitable[Any]], context: FakeContext) -> Outcome:
    try:
        response = await call()
    except grpc.aio.AbortError:
        return Outcome(context.code, context.details, context.trailing)
    return Outcome(grpc.StatusCode.OK, "", response=response)


class _OfflineCall:
    """The hub's IssuerInquiry multi-callable: serialize, answer in-process, deserialize."""

    def __init__(
        self,
        issuer: IssuerServicer | None,
        serialize: Callable[[Any], bytes],
        deserialize: Callable[[bytes], Any],
    ) -> None:
        self._issuer = issuer
        self._serialize = serialize
        self._deserialize = deserialize

    async def __call__(self, request: Any, **options: Any) -> Any:
        issuer = self._issuer
        if issuer is None:  # the bank is down: what a refused connection looks like
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.UNAVAILABLE,
                grpc.aio.Metadata(),
                grpc.aio.Metadata(),
                "failed to connect to all addresses",
            )
        inquiry = issuer_pb2.IssuerInquiryRequest.FromString(self._serialize(request))
        context = FakeContext(remaining=options.get("timeout"))
        outcome = await _run(lambda: issuer.IssuerInquiry(inquiry, context.as_grpc()), context)
        if outcome.code is not grpc.StatusCode.OK:
            raise grpc.aio.AioRpcError(
                outcome.code,
                grpc.aio.Metadata(),
                grpc.aio.Metadata(*context.trailing),
                outcome.details,
            )
        return self._deserialize(outcome.response.SerializeToString())


class OfflineChannel:
    """Stands in for the grpc.aio.Channel the hub opens to one issuer."""

    def __init__(self, issuer: IssuerServicer | None) -> None:
        self._issuer = issuer

    def unary_unary(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes],
        response_deserializer: Callable[[bytes], Any],
        _registered_method: bool = False,
    ) -> _OfflineCall:
        return _OfflineCall(self._issuer, request_serializer, response_deserializer)

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return grpc.ChannelConnectivity.READY

    async def close(self, grace: float | None = None) -> None:
        return None


def _scratch_dir() -> Path:
    """Where the audit database goes: $TXVERIFY_FUZZ_DIR (the runner removes it), else a
    temporary directory removed at exit. tmpfs when there is one: the audit store fsyncs
    every commit, and the fuzzer is here to measure the hub, not the disk."""
    given = os.environ.get("TXVERIFY_FUZZ_DIR")
    if given:
        return Path(given)
    shm = Path("/dev/shm")
    base = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
    path = Path(tempfile.mkdtemp(prefix="txverify-fuzz-", dir=base))
    atexit.register(shutil.rmtree, path, True)
    return path


def _bank(code: str) -> Bank:
    ledger = open_ledger("sqlite://")
    seed_ledger(ledger, profile(code), transactions=TRANSACTIONS, seed=1, now=BANK_NOW)
    return Bank(profile(code), ledger, clock=lambda: BANK_NOW)


def _members() -> list[Member]:
    def member(code: str, *, issuer: bool = True, **extra: Any) -> Member:
        endpoint = f"bank-{code}.offline:50051" if issuer else ""
        return with_default_roles(Member(code=code, issuer_endpoint=endpoint, **extra))

    return [
        member("014"),
        member("004"),
        member("900", kind=MemberKind.NON_BANK),
        member(REQUESTER_ONLY, issuer=False),
        member(SUSPENDED, status=MemberStatus.SUSPENDED),
        member(DOWN),
    ]


class OfflineNetwork:
    """Three simulated banks and a hub over them, on one private event loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.banks = {code: _bank(code) for code in SIMULATED}
        self.issuers = {
            code: IssuerServicer(bank, lambda: NO_FAULTS) for code, bank in self.banks.items()
        }
        # Under mTLS a bank answers the hub only.
        self.guarded_issuers = {
            code: IssuerServicer(bank, lambda: NO_FAULTS, only_peer="hub")
            for code, bank in self.banks.items()
        }
        self.membership = Membership(open_registry_store("sqlite://"))
        self.membership.bootstrap(_members())
        self.admission = Admission(self.membership, RateLimiter(None))
        self._dir = _scratch_dir()
        self.gateway = IssuerGateway(
            ForwardingPolicy(),
            channel_factory=lambda m: cast(
                "grpc.aio.Channel", OfflineChannel(self.issuers.get(m.code))
            ),
        )
        self.loop.run_until_complete(self._start())
        self.failures = _Failures()
        for name in SERVICER_LOGGERS:
            logging.getLogger(name).addHandler(self.failures)
        self.registry_membership = self._registry_membership()
        self.registry_pristine = self.registry_membership.version  # after the bootstrap
        self.registry_servicers = self._registry_servicers()
        self.audit_servicers = {
            mode: AuditLogServicer(
                self.audit.store, self.membership, mode=mode, operators=(OPERATOR,)
            )
            for mode in IdentityMode
        }

    async def _start(self) -> None:
        # The audit writer makes its asyncio objects on the running loop.
        self.audit = AuditWriter(open_audit_store(f"sqlite://{self._dir}/audit.sqlite"))
        router = Router(self.admission, self.gateway, self.audit, Metrics())
        self.servicers = {mode: VerificationServicer(router, mode) for mode in IdentityMode}

    def _registry_membership(self) -> Membership:
        # Changes reach a rate limiter as in the hub (server/txverify/hub/app.py's member_changed).
        limiter = RateLimiter(None)
        membership = Membership(  # ~1 ms
            open_registry_store("sqlite://"),
            on_change=lambda m: limiter.set_limit(m.code, member_rate_limit(m)),
        )
        membership.bootstrap(_members())
        return membership

    def _registry_servicers(self) -> dict[IdentityMode, MemberRegistryServicer]:
        return {
            mode: MemberRegistryServicer(
                self.registry_membership,
                mode=mode,
                operators=(OPERATOR,),
                circuit=self.gateway.circuit_state,
            )
            for mode in IdentityMode
        }

    def reset_registry(self) -> None:
        """The registry target's members as they were at the start, if a call changed them
        (so that every input starts from the same registry, and a crash replays)."""
        if self.registry_membership.version == self.registry_pristine:
            return
        self.registry_membership.store.close()
        self.registry_membership = self._registry_membership()
        self.registry_servicers = self._registry_servicers()

    def _call(
        self,
        call: Callable[[grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]],
        *,
        metadata: Iterable[tuple[str, str | bytes]],
        peer: str,
        common_names: Sequence[bytes],
        remaining: float | None = None,
    ) -> Outcome:
        """One RPC through a real servicer; an unexpected error the hub logged (and
        answered INTERNAL) is raised here, with its own traceback."""
        context = FakeContext(
            metadata=tuple(metadata), peer=peer, common_names=common_names, remaining=remaining
        )
        self.failures.caught = None
        outcome = self.loop.run_until_complete(_run(lambda: call(context.as_grpc()), context))
        if self.failures.caught is not None:
            caught, self.failures.caught = self.failures.caught, None
            raise caught
        return outcome

    def registry(
        self,
        rpc: str,
        request: Any,
        *,
        metadata: Iterable[tuple[str, str | bytes]] = (),
        mode: IdentityMode = IdentityMode.DEV,
        peer: str = LOOPBACK_PEER,
        common_names: Sequence[bytes] = (),
    ) -> Outcome:
        """One MemberRegistry call (`rpc`, e.g. "RegisterMember") through the real servicer."""
        method = getattr(self.registry_servicers[mode], rpc)
        return self._call(
            lambda context: method(request, context),
            metadata=metadata,
            peer=peer,
            common_names=common_names,
        )

    def query_audit(
        self,
        request: audit_pb2.QueryAuditRequest,
        *,
        metadata: Iterable[tuple[str, str | bytes]] = (),
        mode: IdentityMode = IdentityMode.DEV,
        peer: str = LOOPBACK_PEER,
        common_names: Sequence[bytes] = (),
    ) -> Outcome:
        """One AuditLog.QueryAudit through the real servicer, over the Verify calls' audit."""
        servicer = self.audit_servicers[mode]
        return self._call(
            lambda context: servicer.QueryAudit(request, context),
            metadata=metadata,
            peer=peer,
            common_names=common_names,
        )

    def slips(self) -> list[StoredSlip]:
        """Every slip the simulated banks issued, newest first per bank."""
        return [slip for bank in self.banks.values() for slip in bank.list_slips(1000, None)]

    def verify(
        self,
        request: verification_pb2.VerifyRequest,
        *,
        metadata: Iterable[tuple[str, str | bytes]] = (),
        mode: IdentityMode = IdentityMode.DEV,
        peer: str = LOOPBACK_PEER,
        common_names: Sequence[bytes] = (),
        remaining: float | None = None,
    ) -> Outcome:
        """One Verify through the real servicer; an unexpected error the hub logged (and
        answered INTERNAL) is raised here, with its own traceback."""
        servicer = self.servicers[mode]
        return self._call(
            lambda context: servicer.Verify(request, context),
            metadata=metadata,
            peer=peer,
            common_names=common_names,
            remaining=remaining,
        )

    def inquire(
        self,
        request: issuer_pb2.IssuerInquiryRequest,
        *,
        bank: str,
        guarded: bool = False,
        common_names: Sequence[bytes] = (),
    ) -> Outcome:
        """One IssuerInquiry to a simulated bank's servicer, as the network would deliver it."""
        issuer = (self.guarded_issuers if guarded else self.issuers)[bank]
        context = FakeContext(common_names=common_names)
        return self.loop.run_until_complete(
            _run(lambda: issuer.IssuerInquiry(request, context.as_grpc()), context)
        )

    def close(self) -> None:
        for name in SERVICER_LOGGERS:
            logging.getLogger(name).removeHandler(self.failures)
        self.loop.run_until_complete(self._stop())
        self.loop.close()
        for bank in self.banks.values():
            bank.ledger.close()
        self.membership.store.close()
        self.registry_membership.store.close()

    async def _stop(self) -> None:
        await self.gateway.close()
        await self.audit.close()

    def __enter__(self) -> OfflineNetwork:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


_network: OfflineNetwork | None = None


def network() -> OfflineNetwork:
    """The process's offline network, built on first use (seeding takes a moment)."""
    global _network
    if _network is None:
        _network = OfflineNetwork()
    return _network


def close_network() -> None:
    """Close the process's network (tests; a fuzzing process just exits)."""
    global _network
    if _network is not None:
        _network.close()
        _network = None
