"""The hub's settings: one frozen dataclass, its defaults defined here once.

`txverify hub` builds HubSettings from its flags, then TXVERIFY_HUB_* environment
variables (so a database password need not sit in argv), then these defaults; its
--help shows them from here. Light to import: the CLI reads it for every command.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from txverify.hub.identity import IdentityMode
from txverify.hub.registry import Member, load_members
from txverify.hub.resilience.breaker import BreakerSettings
from txverify.hub.resilience.ratelimit import RateLimit
from txverify.runtime import tls
from txverify.runtime.storage import MEMORY_URL, is_postgres_url, sqlite_path

DEFAULT_PORT = 50051
# Also the defaults of forwarding.ForwardingPolicy, which the hub builds from these.
ISSUER_TIMEOUT = 5.0  # seconds: cap on one issuer inquiry
MAX_IN_FLIGHT = 200  # inquiries in flight per issuer
# What a SLIP_NOT_FOUND costs a member's rate limit, in calls (txverify.hub.admission).
NOT_FOUND_COST = 10
MAX_NOT_FOUND_COST = 1000


def _is_endpoint_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises on a port that is not a number)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def default_of(settings: type[Any], name: str) -> Any:
    """The default of one field of a settings dataclass (its factory's value if it has one)."""
    (found,) = [f for f in fields(settings) if f.name == name]
    if found.default is not MISSING:
        return found.default
    if found.default_factory is not MISSING:
        return found.default_factory()
    raise KeyError(f"{settings.__name__}.{name} has no default")


@dataclass(frozen=True, slots=True)
class ConsoleSettings:
    port: int  # 0 = any free port
    host: str = "127.0.0.1"
    simulator: str | None = None  # BankSimulator control address (fault controls)
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24), repr=False)

    def __post_init__(self) -> None:
        if not tls.is_loopback_host(self.host):
            raise ValueError(f"the console listens on loopback only, not {self.host!r}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"console port must be 0-65535, got {self.port}")


@dataclass(frozen=True, slots=True)
class HubSettings:
    """How to run the hub."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT  # 0 = any free port (tests)
    db: str = MEMORY_URL  # the hub's database URL: sqlite:///path, sqlite:// or postgresql://...
    members_file: Path | None = None  # TOML bootstrap
    members: tuple[Member, ...] = ()  # bootstrap when members_file is None
    mode: IdentityMode = IdentityMode.DEV
    pki: Path | None = None  # certificate directory (txverify certs init), for mode TLS
    operators: tuple[str, ...] = (tls.OPERATOR,)
    rate_limit: RateLimit | None = None  # default per member; None = unlimited
    # Where replicas share their rate-limit buckets (redis://host:port/db);
    # None = each process limits on its own (resilience/ratelimit_redis.py says why).
    rate_limit_store: str | None = None
    # Calls of a member's rate limit that a SLIP_NOT_FOUND answer costs (a found slip
    # costs 1; 1 = no difference): guessing transRefs gets RATE_LIMITED sooner.
    not_found_cost: int = NOT_FOUND_COST
    issuer_timeout: float = ISSUER_TIMEOUT
    max_in_flight_per_issuer: int = MAX_IN_FLIGHT
    breaker: BreakerSettings = field(default_factory=BreakerSettings)
    max_concurrent_rpcs: int = 10_000
    grace: float = 5.0  # seconds to finish in-flight RPCs on shutdown
    # On SIGTERM, health says NOT_SERVING this long while RPCs are still
    # served, so load balancers polling health move traffic away first.
    drain_delay: float = 1.0
    metrics_port: int | None = None  # Prometheus /metrics on loopback; None = off
    # The JSON API (Connect protocol, server/txverify/hub/jsonapi/) on this port of `host`,
    # under the same identity rules; 0 = any free port, None = off.
    json_port: int | None = None
    # Decoder processes reading slip images (VerifyRequest.slip_image), SCHED_IDLE: hub/images.py.
    image_workers: int = 1
    # Audit, duplicate counting and idempotency; off only to measure their cost.
    audit: bool = True
    event_loop: str = "auto"  # uvloop when installed ("auto"), or "uvloop" / "asyncio"
    # Set by the supervisor (server/txverify/hub/workers.py) in each of `--workers N` processes:
    # the port is shared with the other workers (SO_REUSEPORT) and so is the database.
    shared: bool = False
    # The web console (server/txverify/hub/console/), on loopback; None = off. One process only:
    # with workers each would see a share of the traffic.
    console: ConsoleSettings | None = None
    # Seconds between re-reads of the registry, for changes other processes made
    # (workers, or hubs on one PostgreSQL); None = the backend's default, see
    # `refresh_every`.
    registry_refresh: float | None = None
    # OpenTelemetry: export Verify and IssuerInquiry spans to this OTLP/gRPC collector
    # (http://host:4317; https:// for TLS), from the `otel` extra; None = off, and
    # then no OpenTelemetry code is loaded (txverify.hub.otel).
    otlp_endpoint: str | None = None

    def __post_init__(self) -> None:
        if self.event_loop not in ("auto", "uvloop", "asyncio"):
            raise ValueError(f"event loop must be auto, uvloop or asyncio, not {self.event_loop!r}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0-65535, got {self.port}")
        if self.json_port is not None and not 0 <= self.json_port <= 65535:
            raise ValueError(f"json port must be 0-65535, got {self.json_port}")
        if self.json_port and self.json_port == self.port:
            raise ValueError(f"the JSON API and gRPC cannot share port {self.port}")
        if self.rate_limit_store is not None and not self.rate_limit_store.startswith(
            ("redis://", "rediss://", "unix://")
        ):
            raise ValueError(
                f"the rate-limit store is a Redis URL (redis://host:port/db), "
                f"not {self.rate_limit_store!r}"
            )
        if (
            isinstance(self.not_found_cost, bool)
            or not isinstance(self.not_found_cost, int)
            or not 1 <= self.not_found_cost <= MAX_NOT_FOUND_COST
        ):
            raise ValueError(
                f"not-found cost must be a whole number 1-{MAX_NOT_FOUND_COST} (calls), "
                f"got {self.not_found_cost!r}"
            )
        if not (self.db.startswith("sqlite://") or is_postgres_url(self.db)):
            raise ValueError(
                f"database URL must be sqlite:///path, sqlite:// or postgresql://..., "
                f"not {self.db!r}"
            )
        if self.shared and not self.postgres and sqlite_path(self.db) is None:
            raise ValueError(
                "hub workers share one database: a file (sqlite:///path) or postgresql://..."
            )
        if self.console is not None and self.shared:
            raise ValueError("the console runs in a single hub process: not with --workers")
        if self.otlp_endpoint is not None and not _is_endpoint_url(self.otlp_endpoint):
            raise ValueError(
                f"the OTLP endpoint is an http:// or https:// URL with a host "
                f"(http://127.0.0.1:4317), not {self.otlp_endpoint!r}"
            )
        if self.registry_refresh is not None and self.registry_refresh <= 0:
            raise ValueError("registry_refresh must be positive")
        if self.issuer_timeout <= 0 or self.grace < 0 or self.drain_delay < 0:
            raise ValueError("issuer_timeout must be positive, grace and drain_delay not negative")
        if not 1 <= self.image_workers <= 64:
            raise ValueError(f"image workers must be 1-64, got {self.image_workers}")
        if self.max_in_flight_per_issuer < 1 or self.max_concurrent_rpcs < 1:
            raise ValueError("in-flight and concurrency limits must be at least 1")
        if self.mode is IdentityMode.TLS and self.pki is None:
            raise ValueError("mTLS needs a certificate directory (txverify certs init DIR)")
        if self.mode is IdentityMode.DEV and not tls.is_loopback_host(self.host):
            raise ValueError(
                f"dev mode trusts a header for identity, so it listens on loopback only, "
                f"not {self.host!r}: use --tls to serve other hosts"
            )

    @property
    def postgres(self) -> bool:
        return is_postgres_url(self.db)

    @property
    def follows_registry(self) -> bool:
        """Other processes may change the registry: workers on one file, and any hub on
        PostgreSQL (nothing tells a hub whether it is the only one on its database)."""
        return self.shared or self.postgres

    @property
    def refresh_every(self) -> float:
        """SQLite: 1 s, the only way workers learn of each other's changes. PostgreSQL:
        5 s, a safety net only, as LISTEN/NOTIFY brings every change within
        milliseconds; it bounds how stale a process can be while its listener is
        down (or a change was written by hand), at one read of the members per
        process every 5 s."""
        if self.registry_refresh is not None:
            return self.registry_refresh
        return 5.0 if self.postgres else 1.0

    def bootstrap_members(self) -> Sequence[Member]:
        return load_members(self.members_file) if self.members_file else self.members
