"""`txverify hub`: the hub alone, its flags (or TXVERIFY_HUB_*) over HubSettings' defaults."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from txverify.cli.common import (
    HUB_DEFAULTS,
    RATE_LIMIT_BURST,
    err,
)
from txverify.cli.network import (
    READY_PREFIX,
)
from txverify.hub.settings import HubSettings
from txverify.runtime import logs


def json_api_url(host: str, port: int, *, tls: bool) -> str:
    """The JSON API's base URL as a client reaches it (a wildcard host means this host)."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "", "localhost") else host
    shown = f"[{shown}]" if ":" in shown else shown
    return f"{'https' if tls else 'http'}://{shown}:{port}/"


def hub(
    members: Annotated[
        Path,
        typer.Option(
            envvar="TXVERIFY_HUB_MEMBERS",
            help="TOML file of members (\\[\\[member]] code, name, issuer_endpoint).",
        ),
    ],
    host: Annotated[
        str, typer.Option(envvar="TXVERIFY_HUB_HOST", help="Address to listen on.")
    ] = HUB_DEFAULTS.host,
    port: Annotated[
        int, typer.Option(envvar="TXVERIFY_HUB_PORT", help="Port; 0 picks a free one.")
    ] = HUB_DEFAULTS.port,
    issuer_timeout: Annotated[
        float,
        typer.Option(
            envvar="TXVERIFY_HUB_ISSUER_TIMEOUT", help="Cap in seconds per issuer inquiry."
        ),
    ] = HUB_DEFAULTS.issuer_timeout,
    log_level: Annotated[
        str, typer.Option(envvar="TXVERIFY_HUB_LOG_LEVEL", help="DEBUG, INFO, WARNING or ERROR.")
    ] = "INFO",
    ready_line: Annotated[
        bool,
        typer.Option(
            envvar="TXVERIFY_HUB_READY_LINE",
            help="Print one ready line (JSON) on stdout once listening.",
        ),
    ] = False,
    db: Annotated[
        str,
        typer.Option(
            envvar="TXVERIFY_HUB_DB",
            help="Hub database URL (members and audit): sqlite:///path/hub.sqlite, "
            "sqlite:// (in memory) or postgresql://user@host:port/db.",
        ),
    ] = HUB_DEFAULTS.db,
    certs: Annotated[
        Path | None,
        typer.Option(
            envvar="TXVERIFY_HUB_CERTS", help="Certificate directory: serve with mutual TLS."
        ),
    ] = None,
    rate_limit_rps: Annotated[
        float,
        typer.Option(
            envvar="TXVERIFY_HUB_RATE_LIMIT_RPS",
            help="Default Verify/s per member (0 = unlimited).",
        ),
    ] = 0.0,
    rate_limit_burst: Annotated[
        int, typer.Option(envvar="TXVERIFY_HUBRATE_LIMIT_BURST", help="Default burst per member.")
    ] = RATE_LIMIT_BURST,
    rate_limit_store: Annotated[
        str | None,
        typer.Option(
            envvar="TXVERIFY_HUB_RATE_LIMIT_STORE",
            help="Share rate limits between hub processes and replicas in this Redis "
            "(redis://host:port/db); default: each process limits on its own.",
        ),
    ] = None,
    not_found_cost: Annotated[
        int,
        typer.Option(
            envvar="TXVERIFY_HUB_NOT_FOUND_COST",
            help="Calls of a member's rate limit that a SLIP_NOT_FOUND answer costs "
            "(a found slip costs 1; 1 = the same).",
        ),
    ] = HUB_DEFAULTS.not_found_cost,
    max_in_flight: Annotated[
        int,
        typer.Option(envvar="TXVERIFY_HUB_MAX_IN_FLIGHT", help="Inquiries in flight per issuer."),
    ] = HUB_DEFAULTS.max_in_flight_per_issuer,
    breaker_failures: Annotated[
        int,
        typer.Option(
            envvar="TXVERIFY_HUB_BREAKER_FAILURES",
            help="Consecutive issuer failures that open its circuit.",
        ),
    ] = HUB_DEFAULTS.breaker.failure_threshold,
    breaker_cooldown: Annotated[
        float,
        typer.Option(
            envvar="TXVERIFY_HUB_BREAKER_COOLDOWN",
            help="Seconds a circuit stays open before a probe.",
        ),
    ] = HUB_DEFAULTS.breaker.cooldown,
    breaker_failing_seconds: Annotated[
        float,
        typer.Option(
            envvar="TXVERIFY_HUB_BREAKER_FAILING_SECONDS",
            help="Seconds the consecutive failures must span before the circuit opens "
            "(0: the count alone), so that an issuer failing some inquiries at a high "
            "rate is not cut off.",
        ),
    ] = HUB_DEFAULTS.breaker.failing_seconds,
    drain_delay: Annotated[
        float,
        typer.Option(
            envvar="TXVERIFY_HUB_DRAIN_DELAY",
            help="On SIGTERM, seconds of NOT_SERVING before refusing RPCs.",
        ),
    ] = HUB_DEFAULTS.drain_delay,
    grace: Annotated[
        float,
        typer.Option(envvar="TXVERIFY_HUB_GRACE", help="Seconds in-flight RPCs get on SIGTERM."),
    ] = HUB_DEFAULTS.grace,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            envvar="TXVERIFY_HUB_METRICS_PORT",
            help="Serve Prometheus /metrics on this port (0 = any); "
            "with --workers, worker i serves port + i.",
        ),
    ] = None,
    json_port: Annotated[
        int | None,
        typer.Option(
            envvar="TXVERIFY_HUB_JSON_PORT",
            help="Serve the JSON API (the Connect protocol: JSON or protobuf over HTTP/1.1 "
            "and HTTP/2, and gRPC-Web) on this port (0 = any), with the same identity rules; "
            "its OpenAPI document at /openapi.json.",
        ),
    ] = None,
    image_workers: Annotated[
        int,
        typer.Option(
            envvar="TXVERIFY_HUB_IMAGE_WORKERS",
            min=1,
            max=64,
            help="Decoder processes reading slip images (VerifyRequest.slip_image), at the "
            "lowest CPU priority so that QR-text verifications go first.",
        ),
    ] = HUB_DEFAULTS.image_workers,
    audit: Annotated[
        bool,
        typer.Option(
            envvar="TXVERIFY_HUB_AUDIT",
            help="Audit, duplicates and idempotency (--no-audit only for benchmarks).",
        ),
    ] = HUB_DEFAULTS.audit,
    workers: Annotated[
        int,
        typer.Option(
            envvar="TXVERIFY_HUB_WORKERS",
            min=1,
            max=256,
            help="Hub processes sharing the port (SO_REUSEPORT) and the --db database; "
            "1 = one process, no supervisor.",
        ),
    ] = 1,
    event_loop: Annotated[
        str,
        typer.Option(
            envvar="TXVERIFY_HUB_EVENT_LOOP",
            help="auto (uvloop when installed), uvloop or asyncio.",
        ),
    ] = HUB_DEFAULTS.event_loop,
    otlp_endpoint: Annotated[
        str | None,
        typer.Option(
            envvar="TXVERIFY_HUB_OTLP_ENDPOINT",
            help="Export OpenTelemetry spans (Verify, IssuerInquiry) to this OTLP/gRPC "
            "collector, e.g. http://127.0.0.1:4317; needs the otel extra "
            "(pip install 'txverify[otel]'). Default: off, no cost.",
        ),
    ] = HUB_DEFAULTS.otlp_endpoint,
    console: Annotated[
        int | None,
        typer.Option(
            envvar="TXVERIFY_HUB_CONSOLE",
            help="Serve the web console on this loopback port (0 = any); its operator "
            "token is printed on stderr.",
        ),
    ] = None,
    console_simulator: Annotated[
        str | None,
        typer.Option(
            envvar="TXVERIFY_HUB_CONSOLE_SIMULATOR",
            help="The simulator's control address, for the console's fault controls.",
        ),
    ] = None,
) -> None:
    """Run the hub alone (dev mode, or mutual TLS with --certs)."""
    from txverify.hub.app import RunningHub, check_otel, run, serve  # the CLI may start the hub
    from txverify.hub.identity import IdentityMode
    from txverify.hub.resilience.breaker import BreakerSettings
    from txverify.hub.resilience.ratelimit import RateLimit
    from txverify.hub.settings import ConsoleSettings

    logs.configure(log_level)

    def announce(bound: int, json_port: int | None) -> None:  # --workers N
        ready = {"address": f"{host}:{bound}"}
        if json_port is not None:
            ready["json_api"] = json_api_url(host, json_port, tls=certs is not None)
            err.print(f"json api: {ready['json_api']}", soft_wrap=True)
        if ready_line:
            print(READY_PREFIX + json.dumps(ready), flush=True)

    def report(running: RunningHub) -> None:
        ready: dict[str, str] = {"address": f"{host}:{running.port}"}
        if running.json_api is not None:
            ready["json_api"] = json_api_url(host, running.json_api.port, tls=certs is not None)
            err.print(f"json api: {ready['json_api']}", soft_wrap=True)
        if running.console is not None:
            # The token goes to the terminal (and the ready line, for `txverify up`),
            # never to the log, which may be shipped elsewhere.
            token = running.console.settings.token
            err.print(f"console: {running.console.url}  operator token: {token}", soft_wrap=True)
            ready |= {"console": running.console.url, "console_token": token}
        if ready_line:
            print(READY_PREFIX + json.dumps(ready), flush=True)

    try:
        settings = HubSettings(
            host=host,
            port=port,
            db=db,
            members_file=members,
            mode=IdentityMode.TLS if certs else IdentityMode.DEV,
            pki=certs,
            rate_limit=RateLimit(rate_limit_rps, rate_limit_burst) if rate_limit_rps else None,
            rate_limit_store=rate_limit_store,
            not_found_cost=not_found_cost,
            issuer_timeout=issuer_timeout,
            max_in_flight_per_issuer=max_in_flight,
            breaker=BreakerSettings(breaker_failures, breaker_cooldown, breaker_failing_seconds),
            drain_delay=drain_delay,
            grace=grace,
            metrics_port=metrics_port,
            json_port=json_port,
            image_workers=image_workers,
            audit=audit,
            event_loop=event_loop,
            otlp_endpoint=otlp_endpoint,
            console=ConsoleSettings(console, host="127.0.0.1", simulator=console_simulator)
            if console is not None
            else None,
        )
        if workers == 1:
            run(serve(settings, report), event_loop=event_loop)
            return
        from txverify.hub.workers import run_workers  # forks before any gRPC object exists

        check_otel(settings)  # before the workers, each of which would fail on its own

        code = run_workers(settings, workers, announce)
    except (ValueError, OSError) as exc:
        err.print(f"[red]hub: {exc}[/]")
        raise typer.Exit(1) from None
    if code:
        raise typer.Exit(code)
