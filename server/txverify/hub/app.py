"""Run the hub: VerificationService and MemberRegistry, health and reflection, on one server."""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import logging
import signal
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc

from txverify.hub.admission import Admission, member_rate_limit
from txverify.hub.audit import NullAuditStore
from txverify.hub.audit.service import AuditLogServicer
from txverify.hub.audit.stores import open_audit_store
from txverify.hub.audit.writer import AuditWriter
from txverify.hub.console.actions import Actions
from txverify.hub.console.feed import LiveFeed
from txverify.hub.console.web import Console
from txverify.hub.forwarding import (
    CHANNEL_OPTIONS,
    ForwardingPolicy,
    IssuerGateway,
    insecure_channel,
)
from txverify.hub.identity import IdentityMode
from txverify.hub.images import ImageDecoder
from txverify.hub.issuer_health import HubHealth, IssuerHealth
from txverify.hub.jsonapi.server import RunningJsonApi, start_json_api
from txverify.hub.membership import Membership
from txverify.hub.metrics import Metrics
from txverify.hub.outcome import Observers, RequestLog
from txverify.hub.registry import Member
from txverify.hub.registry.service import MemberRegistryServicer
from txverify.hub.registry.store import open_registry_store
from txverify.hub.registry.watch import RegistryWatch
from txverify.hub.resilience.breaker import CircuitState
from txverify.hub.resilience.ratelimit import RateLimiter
from txverify.hub.resilience.ratelimit_redis import SharedRateLimiter
from txverify.hub.router import Router
from txverify.hub.settings import ConsoleSettings, HubSettings
from txverify.hub.usage import UsageServicer
from txverify.hub.verification import VerificationServicer
from txverify.runtime import tls
from txverify.runtime.grpcserver import (
    RequestGuard,
    add_health_and_reflection,
    bind,
    new_server,
    stop_server,
)
from txverify.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
    usage_pb2,
    usage_pb2_grpc,
    verification_pb2,
    verification_pb2_grpc,
)
from txverify.wire import MAX_SLIP_IMAGE_BYTES

if TYPE_CHECKING:  # imported only when an OTLP endpoint is set (_spans)
    from txverify.hub.otel import Spans

log = logging.getLogger(__name__)
VERIFICATION_SERVICE = verification_pb2.DESCRIPTOR.services_by_name["VerificationService"].full_name
REGISTRY_SERVICE = registry_pb2.DESCRIPTOR.services_by_name["MemberRegistry"].full_name
AUDIT_SERVICE = audit_pb2.DESCRIPTOR.services_by_name["AuditLog"].full_name
USAGE_SERVICE = usage_pb2.DESCRIPTOR.services_by_name["UsageService"].full_name


@dataclass(slots=True)
class RunningHub:
    """A started hub: its server, port and parts, for tests and the entry point."""

    server: grpc.aio.Server
    port: int
    health: HubHealth
    membership: Membership
    gateway: IssuerGateway
    audit: AuditWriter
    metrics: Metrics
    issuers: IssuerHealth
    stop_metrics: Callable[[], None] | None = None
    watch: RegistryWatch | None = None  # follows other processes' registry changes
    guard: RequestGuard = field(default_factory=RequestGuard)
    limiter: RateLimiter | SharedRateLimiter | None = None
    console: Console | None = None
    json_api: RunningJsonApi | None = None
    images: ImageDecoder | None = None
    spans: Spans | None = None  # OpenTelemetry, when an OTLP endpoint is set

    async def stop(self, grace: float, drain_delay: float = 0.0) -> None:
        """NOT_SERVING first (still serving for `drain_delay`, so balancers stop sending);
        then refuse new RPCs, finish in-flight ones within `grace`, close issuer channels."""
        await self.health.enter_graceful_shutdown()
        self.issuers.close()
        if self.console is not None:
            await self.console.stop()
        if drain_delay:
            await asyncio.sleep(drain_delay)
        # Callers that ignore health are still sending: their new RPCs are held and
        # then answered SHUTTING_DOWN (nothing done, send again), never left for gRPC's
        # shutdown to cancel; RPCs already started finish within `grace` (stop_server).
        if self.json_api is not None:
            await asyncio.gather(
                stop_server(self.server, self.guard, grace), self.json_api.stop(grace)
            )
        else:
            await stop_server(self.server, self.guard, grace)
        if self.watch is not None:  # followed changes while RPCs were still served
            await self.watch.stop()
        if self.images is not None:
            await self.images.close()
        await self.gateway.close()
        await self.audit.close()
        if isinstance(self.limiter, SharedRateLimiter):
            await self.limiter.close()
        self.membership.store.close()
        if self.stop_metrics is not None:
            self.stop_metrics()
        if self.spans is not None:  # the spans of the last RPCs, exported
            await self.spans.close()


def _server(settings: HubSettings, guard: RequestGuard) -> grpc.aio.Server:
    # Workers opt in to sharing the port (settings.shared): the kernel spreads new
    # connections over them (SO_REUSEPORT); a lone hub keeps refusing a port already taken.
    return new_server(
        max_concurrent_rpcs=settings.max_concurrent_rpcs,
        reuse_port=settings.shared,
        guard=guard,
        # A VerifyRequest may carry a slip image; one over its cap gets SLIP_IMAGE_TOO_LARGE
        # from the hub (up to twice the cap), not a bare RESOURCE_EXHAUSTED from gRPC.
        max_receive_bytes=2 * MAX_SLIP_IMAGE_BYTES + 64 * 1024,
    )


def _channel_factory(settings: HubSettings) -> Callable[[Member], grpc.aio.Channel]:
    if settings.mode is IdentityMode.DEV:
        return insecure_channel
    assert settings.pki is not None
    pki = tls.Pki(settings.pki)

    def secure(member: Member) -> grpc.aio.Channel:
        # The hub presents its own certificate to issuers and checks that the
        # issuer's certificate names the member it meant to reach.
        return grpc.aio.secure_channel(
            member.issuer_endpoint,
            tls.channel_credentials(pki, tls.HUB),
            options=(*CHANNEL_OPTIONS, *tls.channel_options(tls.member_dns_name(member.code))),
        )

    return secure


def check_otel(settings: HubSettings) -> None:
    """ValueError when an OTLP endpoint is set but the otel extra is not installed; found
    without importing it (the `--workers` supervisor checks before it forks)."""
    if settings.otlp_endpoint is None:
        return
    for name in ("opentelemetry.sdk.trace", "opentelemetry.exporter.otlp.proto.grpc"):
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            raise ValueError(
                f"--otlp-endpoint needs OpenTelemetry ({name} is missing): "
                "pip install 'txverify[otel]'"
            )


def _spans(settings: HubSettings) -> Spans | None:
    """OpenTelemetry's spans when an OTLP endpoint is set; else None, and nothing of
    OpenTelemetry is imported."""
    if settings.otlp_endpoint is None:
        return None
    check_otel(settings)
    from txverify.hub.otel import Spans

    log.info("tracing: Verify and IssuerInquiry spans to %s (OTLP/gRPC)", settings.otlp_endpoint)
    return Spans(settings.otlp_endpoint)


async def start_hub(settings: HubSettings) -> RunningHub:
    """Build and start the hub; returns once it accepts RPCs."""
    if settings.mode is IdentityMode.DEV:
        log.warning(
            "INSECURE dev mode: callers name themselves in the x-member-id header "
            "(loopback only); use --tls for member identity from certificates"
        )
    spans = _spans(settings)  # first: a missing extra fails before anything starts
    guard = RequestGuard()
    server = _server(settings, guard)
    health = HubHealth()
    issuers: IssuerHealth | None = None  # made once the membership is

    def circuit_changed(code: str, state: CircuitState) -> None:
        if issuers is not None:
            issuers.circuit_changed(code, state)

    metrics = Metrics()
    limiter: RateLimiter | SharedRateLimiter = (
        SharedRateLimiter(settings.rate_limit_store, settings.rate_limit)
        if settings.rate_limit_store
        else RateLimiter(settings.rate_limit)
    )
    gateway = IssuerGateway(
        ForwardingPolicy(
            issuer_timeout=settings.issuer_timeout,
            max_in_flight=settings.max_in_flight_per_issuer,
            breaker=settings.breaker,
        ),
        channel_factory=_channel_factory(settings),
        on_circuit_change=circuit_changed,
    )

    def member_changed(member: Member) -> None:
        limiter.set_limit(member.code, member_rate_limit(member))
        if issuers is not None:
            issuers.changed(member.code)

    store = open_registry_store(settings.db)
    membership = Membership(store, on_change=member_changed, shared=settings.follows_registry)
    for member in membership.directory.all():
        member_changed(member)
    membership.bootstrap(settings.bootstrap_members())
    issuers = IssuerHealth(
        health, membership, gateway.circuit_state, cooldown=settings.breaker.cooldown
    )

    if not settings.audit:
        log.warning("audit, duplicate detection and idempotency are OFF (benchmark mode)")
    audit = AuditWriter(
        open_audit_store(settings.db, shared=settings.shared)
        if settings.audit
        else NullAuditStore(),
        on_batch=metrics.audit_batch,
        shared=settings.shared,
    )
    metrics.watch_issuers(
        lambda: [
            (
                m.code,
                gateway.in_flight(m.code),
                state.name if (state := gateway.circuit_state(m.code)) else None,
            )
            for m in membership.directory.all()
        ]
    )
    feed = LiveFeed() if settings.console is not None else None
    observers = Observers([RequestLog(), metrics, *([feed] if feed is not None else [])])
    images = ImageDecoder(settings.image_workers)
    admission = Admission(membership, limiter, not_found_cost=settings.not_found_cost)
    router = Router(admission, gateway, audit, observers, images, spans)
    verifier = VerificationServicer(router, settings.mode)
    auditor = AuditLogServicer(
        audit.store, membership, mode=settings.mode, operators=settings.operators
    )
    registry = MemberRegistryServicer(
        membership, mode=settings.mode, operators=settings.operators, circuit=gateway.circuit_state
    )
    verification_pb2_grpc.add_VerificationServiceServicer_to_server(verifier, server)
    audit_pb2_grpc.add_AuditLogServicer_to_server(auditor, server)
    registry_pb2_grpc.add_MemberRegistryServicer_to_server(registry, server)
    usage = UsageServicer(audit.store, admission, mode=settings.mode, operators=settings.operators)
    usage_pb2_grpc.add_UsageServiceServicer_to_server(usage, server)
    await add_health_and_reflection(
        server,
        [VERIFICATION_SERVICE, REGISTRY_SERVICE, AUDIT_SERVICE, USAGE_SERVICE],
        health=health,
    )
    await issuers.start()
    credentials = None
    if settings.mode is IdentityMode.TLS:
        assert settings.pki is not None
        credentials = tls.server_credentials(tls.Pki(settings.pki), tls.HUB)
    port = bind(server, settings.host, settings.port, credentials)
    # Following the registry starts before serving: other replicas wait for this
    # one's report once it is listed, and no RPC may come before it is.
    watch = None
    if settings.follows_registry:
        watch = RegistryWatch(
            membership,
            every=settings.refresh_every,
            listen_url=settings.db if settings.postgres else None,
            offload=settings.postgres,
        )
        watch.start()
    await server.start()
    stop_metrics = None
    if settings.metrics_port is not None:
        stop_metrics = metrics.serve(settings.metrics_port, settings.host)
    hub = RunningHub(
        server,
        port,
        health,
        membership,
        gateway,
        audit,
        metrics,
        issuers,
        stop_metrics,
        watch,
        guard,
        limiter,
        images=images,
        spans=spans,
    )
    if settings.json_port is not None:
        try:
            hub.json_api = await start_json_api(
                host=settings.host,
                port=settings.json_port,
                verification=verifier,
                audit=auditor,
                usage=usage,
                registry=registry,
                pki=settings.pki if settings.mode is IdentityMode.TLS else None,
                reuse_port=settings.shared,
            )
        except OSError as error:
            await hub.stop(grace=0)
            raise OSError(
                f"the JSON API cannot listen on {settings.host}:{settings.json_port}: "
                f"{error.strerror or error} (--json-port 0 picks a free port)"
            ) from None
    if settings.console is not None:
        assert feed is not None
        console = _console(settings, settings.console, port, membership, gateway, feed)
        try:
            await console.start()
        except OSError as error:  # its port is taken: stop what started, say which port
            await console.actions.close()
            await hub.stop(grace=0)  # the JSON API too
            raise OSError(
                f"the console cannot listen on {settings.console.host}:{settings.console.port}: "
                f"{error.strerror or error} (--console 0 picks a free port)"
            ) from None
        hub.console = console
    return hub


def _console(
    settings: HubSettings,
    console: ConsoleSettings,
    port: int,
    membership: Membership,
    gateway: IssuerGateway,
    feed: LiveFeed,
) -> Console:
    """The console of this hub: it calls the hub back on its own address."""
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "", "localhost") else settings.host
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    tls_mode = settings.mode is IdentityMode.TLS
    return Console(
        console,
        hub_address=address,
        mode="mtls" if tls_mode else "dev",
        membership=membership,
        circuit=gateway.circuit_state,
        in_flight=gateway.in_flight,
        feed=feed,
        actions=Actions(
            address,
            pki=settings.pki if tls_mode else None,
            operator=settings.operators[0],
            simulator=console.simulator,
        ),
    )


def run(main: Coroutine[Any, Any, None], *, event_loop: str = "auto") -> None:
    """Run the hub's coroutine on uvloop ("uvloop"; "auto": when installed) or asyncio's loop.

    uvloop measured 4% less hub CPU per verification at full load and 7% at
    half load (BENCHMARKS.md); gRPC's own I/O does not run on the loop, so the
    gain is the loop's callbacks and futures only.
    """
    if event_loop != "asyncio":  # the value was checked by HubSettings
        try:
            import uvloop
        except ImportError:
            if event_loop == "uvloop":
                raise ValueError("uvloop is not installed (pip install uvloop)") from None
        else:
            uvloop.run(main)
            return
    asyncio.run(main)


async def serve(
    settings: HubSettings, on_ready: Callable[[RunningHub], None] | None = None
) -> None:
    """Run the hub until SIGINT or SIGTERM, then drain within the grace period."""
    hub = await start_hub(settings)
    # What exists now lives as long as the process (modules, the directory, channels,
    # the servicers): frozen out of the collector's sight, a full collection scans
    # only what requests made since. Measured at 590 req/s: a full collection
    # stopped the loop for 53-67 ms each time, which set the half-load p99.
    gc.collect()
    gc.freeze()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    if on_ready is not None:
        on_ready(hub)
    try:
        await stopping.wait()
        log.info(
            "hub draining: NOT_SERVING for %.1fs, then %.1fs for in-flight RPCs",
            settings.drain_delay,
            settings.grace,
        )
    finally:
        await hub.stop(settings.grace, settings.drain_delay)
        log.info("hub stopped")
