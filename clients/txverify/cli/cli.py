"""The `txverify` command: run a simulated network, run its parts, verify slips."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import signal
import socket
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer
import typer.core
from rich.console import Console
from rich.markup import escape

from txverify import units
from txverify.banks import is_member_code
from txverify.cli import auditcmd, loadcmd, members, simulatorcmd, verifycmd
from txverify.cli import certs as certs_cli
from txverify.cli.network import (
    DEFAULT_BANKS,
    DEFAULT_CONSOLE_PORT,
    READY_PREFIX,
    NetworkError,
    network_file,
    running_network,
    wait_any,
)
from txverify.cli.scenario_cmd import scenario_app
from txverify.hub.settings import HubSettings
from txverify.runtime import logs, tls
from txverify.simulators.settings import SimulatorSettings

app = typer.Typer(
    help="txverify: a PromptPay-style slip verification hub with simulated member banks.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # -h as well as --help, on every command (subcommands inherit it).
    context_settings={"help_option_names": ["-h", "--help"]},
)

# typer labels the type of every option in help, flags too ("--json <bool>"); a flag
# takes no value, so it shows none, as click's own help does.
_display_type = typer.core.TyperOption.display_type_rich


def _flags_show_no_type(self: typer.core.TyperOption, ctx: Any) -> str | None:
    return None if self.is_flag else _display_type(self, ctx)


typer.core.TyperOption.display_type_rich = _flags_show_no_type  # type: ignore[method-assign]


def _version(show: bool) -> None:
    if show:
        print(f"txverify {version('txverify')}")
        raise typer.Exit()


@app.callback()
def _main(
    _: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """txverify: a PromptPay-style slip verification hub with simulated member banks."""


out = Console()
err = Console(stderr=True, soft_wrap=True)

# The hub's flag defaults, from its settings (defined once, in txverify.hub.settings).
_HUB = HubSettings()
_BANKS = SimulatorSettings(codes=DEFAULT_BANKS)  # the simulated banks' defaults, likewise
_RATE_LIMIT_BURST = 100  # the default burst once --rate-limit-rps sets a rate

# Exit code of a command given bad input (typer's own for bad flags).
EXIT_BAD_INPUT = 2


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _codes(text: str) -> list[str]:
    codes = [c.strip() for c in text.split(",") if c.strip()]
    for code in codes:
        if not is_member_code(code):
            raise typer.BadParameter(f"bank codes are 3 digits, got {code!r}")
    if len(set(codes)) != len(codes):
        raise typer.BadParameter("a bank code is listed twice")
    return codes


def _refuse_plaintext_beyond_loopback(command: str, host: str) -> None:
    """Exit 2 before anything starts when a network without TLS is asked to listen off
    loopback: the hub (dev mode) and the simulated banks would refuse it anyway."""
    refused = tls.plaintext_host_error(
        host,
        f"without TLS `{command}` trusts a header for identity and the simulated banks "
        "authenticate nobody",
    )
    if refused:
        err.print(f"[red]{command}: {escape(refused)}[/]")
        raise typer.Exit(EXIT_BAD_INPUT)


# Options `up` and `cluster up` share.
HostOption = Annotated[
    str, typer.Option(help="Address everything listens on (loopback only without mutual TLS).")
]
BanksOption = Annotated[str, typer.Option(help="Member codes to simulate (900 = the e-wallet).")]
SeedOption = Annotated[int, typer.Option(help="Seed of the simulated ledgers.")]
TransactionsOption = Annotated[int, typer.Option(help="Transactions seeded per bank.")]
DEFAULT_BANK_LIST = ",".join(DEFAULT_BANKS)


@app.command()
def up(
    port: Annotated[int, typer.Option(help="Hub port; 0 picks a free one.")] = _HUB.port,
    host: HostOption = "127.0.0.1",
    banks: BanksOption = DEFAULT_BANK_LIST,
    seed: SeedOption = _BANKS.seed,
    transactions: TransactionsOption = _BANKS.transactions,
    data: Annotated[
        Path | None,
        typer.Option(help="Keep ledgers in this directory across restarts (default: temporary)."),
    ] = None,
    retention_days: Annotated[
        int, typer.Option(help="Days a slip stays verifiable.")
    ] = _BANKS.retention_days,
    use_tls: Annotated[
        bool, typer.Option("--tls", help="Mutual TLS on both legs (member -> hub -> issuer).")
    ] = False,
    certs: Annotated[
        Path | None,
        typer.Option(help="Certificate directory for --tls (made if missing; default DATA/certs)."),
    ] = None,
    hub_arg: Annotated[
        list[str] | None,
        typer.Option(
            help="More `txverify hub` options, e.g. --hub-arg=--issuer-timeout=0.6 (repeatable)."
        ),
    ] = None,
    console: Annotated[
        int,
        typer.Option(help="Web console port on 127.0.0.1 (0 = any free port, -1 = no console)."),
    ] = DEFAULT_CONSOLE_PORT,
) -> None:
    """Run the hub and simulated banks in the foreground; Ctrl-C stops them."""
    if console < -1 or console > 65535:
        raise typer.BadParameter("the console port is 0-65535, or -1 for no console")
    if not use_tls:
        _refuse_plaintext_beyond_loopback("up", host)
    _refuse_ports_in_use("up", [(host, port, "--port"), ("127.0.0.1", console, "--console")])
    _serve_network(
        banks=_codes(banks),
        hub_host=host,
        hub_port=port,
        seed=seed,
        transactions=transactions,
        data_dir=data,
        extra_sim_args=("--retention-days", str(retention_days)),
        certs=(certs or (data / "certs" if data else None)) if use_tls else None,
        use_tls=use_tls,
        hub_extra_args=hub_arg or (),
        console_port=None if console == -1 else console,
    )


def _in_use(host: str, port: int) -> bool:
    """Whether another process listens on host:port (a bind there fails)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return False  # the hub says what is wrong with the host
    family, kind, _, _, address = infos[0]
    with socket.socket(family, kind) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind
        try:
            probe.bind(address)
        except OSError:
            return True
    return False


def _refuse_ports_in_use(command: str, wanted: list[tuple[str, int, str]]) -> None:
    """Exit 1 in one line, before anything starts, when a fixed port is taken (a
    `txverify up` still running, say): the hub would fail on it after the banks."""
    taken = [(host, port, flag) for host, port, flag in wanted if port > 0 and _in_use(host, port)]
    if taken:
        where = ", ".join(f"{flag} {port} ({host})" for host, port, flag in taken)
        err.print(
            f"[red]{command}: in use: {escape(where)}[/]: stop what listens there "
            "(another `txverify up`?), or pass --port 0 --console 0 for free ports"
        )
        raise typer.Exit(1)


def command_name() -> str:
    """This command as a user can paste it into another shell: `txverify` when that is
    what PATH finds, else the path it was started by (`make run` starts
    .venv/bin/txverify, which no PATH holds until the venv is activated)."""
    argv0 = Path(sys.argv[0])

    def shown(path: Path) -> str:
        absolute = path.absolute()
        try:
            return shlex.quote(str(absolute.relative_to(Path.cwd())))
        except ValueError:
            return shlex.quote(str(absolute))

    if argv0.name == "__main__.py":  # python -m txverify.cli
        return f"{shown(Path(sys.executable))} -m txverify.cli"
    found = shutil.which("txverify")
    if found is not None and Path(found).resolve() == argv0.resolve():
        return "txverify"
    return shown(argv0)


def _serve_network(**network_args: Any) -> None:
    """Start a network (txverify.cli.network.running_network), show it, run until Ctrl-C."""
    # SIGTERM (a supervisor, `kill`) must stop the children too, as Ctrl-C does:
    # Python's default would end this process at once and leave them running.
    # SIGINT explicitly too: started in the background by a shell (`cmd &`), a
    # process inherits SIGINT ignored, and `kill -INT` would then do nothing.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, _raise_interrupt)
    try:
        with running_network(**network_args) as network:
            mode = "mTLS" if network.certs else "dev mode (x-member-id header, loopback only)"
            front = f" (nginx, {len(network.replicas)} replicas)" if network.replicas else ""
            out.print(
                f"[bold green]txverify is up[/]: hub at [bold]{network.hub_address}[/]{front} "
                f"({mode})"
            )
            for n, replica in enumerate(network.replicas, 1):
                out.print(f"  hub replica {n} at {replica}")
            if network.console:
                out.print(f"  console at [bold]{network.console}[/]", soft_wrap=True)
                out.print(f"  console operator token: {network.console_token}", soft_wrap=True)
            if network.certs:
                out.print(f"  certificates in {network.certs} (use --certs with the CLI)")
            out.print(f"  simulator control at {network.control_address}")
            for bank in network.banks:
                label = f"{bank.code} {bank.short_name}"
                out.print(f"  member {label:<10} {bank.kind:<8} issuer at {bank.address}")
            out.print("\nSample slips to try (in another terminal):")
            for bank in network.banks:
                for sample in bank.samples[:1]:
                    out.print(
                        f"  [dim]{bank.code} {bank.short_name}, "
                        f"{units.format_baht(sample['amount_satang'])} THB[/]"
                    )
                    # soft_wrap: a copy-pasted command must never be broken across lines.
                    out.print(
                        f"  {command_name()} verify {sample['qr_text']}",
                        markup=False,
                        soft_wrap=True,
                    )
            out.print(f"\nNetwork recorded in {network_file()}. Ctrl-C stops it.")
            watched = list(network.procs)
            while True:
                ended = wait_any(watched)
                watched.remove(ended)
                replicas_left = [p for p in network.replica_procs if p.poll() is None]
                if ended in network.replica_procs and replicas_left:
                    # nginx routes around it: the cluster goes on with the others.
                    err.print(
                        f"[yellow]a hub replica exited (code {ended.returncode}); "
                        f"{len(replicas_left)} still serve[/]"
                    )
                    continue
                err.print(
                    f"[red]a process of the network exited (code {ended.returncode}); stopping[/]"
                )
                raise typer.Exit(1)
    except NetworkError as exc:
        err.print(f"[red]cannot start the network:[/] {exc}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        err.print("stopping...")


cluster_app = typer.Typer(
    help="Hub replicas on one PostgreSQL behind nginx, with the simulated banks.",
    no_args_is_help=True,
)


@cluster_app.command("up")
def cluster_up(
    db: Annotated[
        str,
        typer.Option(
            help="PostgreSQL every replica shares (members, audit): postgresql://user@host:port/db."
        ),
    ],
    replicas: Annotated[int, typer.Option(min=1, max=64, help="Hub processes.")] = 2,
    port: Annotated[int, typer.Option(help="nginx's port; 0 picks a free one.")] = _HUB.port,
    host: HostOption = "127.0.0.1",
    banks: BanksOption = DEFAULT_BANK_LIST,
    seed: SeedOption = _BANKS.seed,
    transactions: TransactionsOption = _BANKS.transactions,
    rate_limit_store: Annotated[
        str | None,
        typer.Option(help="Redis the replicas share rate limits in (redis://host:port/db)."),
    ] = None,
    hub_arg: Annotated[
        list[str] | None,
        typer.Option(help="More `txverify hub` options for every replica (repeatable)."),
    ] = None,
) -> None:
    """Run N hub replicas on one PostgreSQL behind nginx (grpc_pass) and the simulated banks.

    Clients, scenarios and the load generator use nginx's address as the hub's.
    """
    if not db.startswith(("postgresql://", "postgres://")):
        err.print("[red]replicas share one database: --db must be a postgresql:// URL[/]")
        raise typer.Exit(2)
    _refuse_plaintext_beyond_loopback("cluster up", host)  # it runs without TLS
    extra = [*(hub_arg or [])]
    if rate_limit_store:
        extra += ["--rate-limit-store", rate_limit_store]
    _serve_network(
        banks=_codes(banks),
        hub_host=host,
        hub_port=port,
        seed=seed,
        transactions=transactions,
        data_dir=None,
        replicas=replicas,
        db=db,
        hub_extra_args=extra,
    )


@app.command()
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
    ] = _HUB.host,
    port: Annotated[
        int, typer.Option(envvar="TXVERIFY_HUB_PORT", help="Port; 0 picks a free one.")
    ] = _HUB.port,
    issuer_timeout: Annotated[
        float,
        typer.Option(
            envvar="TXVERIFY_HUB_ISSUER_TIMEOUT", help="Cap in seconds per issuer inquiry."
        ),
    ] = _HUB.issuer_timeout,
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
    ] = _HUB.db,
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
        int, typer.Option(envvar="TXVERIFY_HUB_RATE_LIMIT_BURST", help="Default burst per member.")
    ] = _RATE_LIMIT_BURST,
    rate_limit_store: Annotated[
        str | None,
        typer.Option(
            envvar="TXVERIFY_HUB_RATE_LIMIT_STORE",
            help="Share rate limits between hub processes and replicas in this Redis "
            "(redis://host:port/db); default: each process limits on its own.",
        ),
    ] = None,
    max_in_flight: Annotated[
        int,
        typer.Option(envvar="TXVERIFY_HUB_MAX_IN_FLIGHT", help="Inquiries in flight per issuer."),
    ] = _HUB.max_in_flight_per_issuer,
    breaker_failures: Annotated[
        int,
        typer.Option(
            envvar="TXVERIFY_HUB_BREAKER_FAILURES",
            help="Consecutive issuer failures that open its circuit.",
        ),
    ] = _HUB.breaker.failure_threshold,
    breaker_cooldown: Annotated[
        float,
        typer.Option(
            envvar="TXVERIFY_HUB_BREAKER_COOLDOWN",
            help="Seconds a circuit stays open before a probe.",
        ),
    ] = _HUB.breaker.cooldown,
    breaker_failing_seconds: Annotated[
        float,
        typer.Option(
            envvar="TXVERIFY_HUB_BREAKER_FAILING_SECONDS",
            help="Seconds the consecutive failures must span before the circuit opens "
            "(0: the count alone), so that an issuer failing some inquiries at a high "
            "rate is not cut off.",
        ),
    ] = _HUB.breaker.failing_seconds,
    drain_delay: Annotated[
        float,
        typer.Option(
            envvar="TXVERIFY_HUB_DRAIN_DELAY",
            help="On SIGTERM, seconds of NOT_SERVING before refusing RPCs.",
        ),
    ] = _HUB.drain_delay,
    grace: Annotated[
        float,
        typer.Option(envvar="TXVERIFY_HUB_GRACE", help="Seconds in-flight RPCs get on SIGTERM."),
    ] = _HUB.grace,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            envvar="TXVERIFY_HUB_METRICS_PORT",
            help="Serve Prometheus /metrics on this port (0 = any); "
            "with --workers, worker i serves port + i.",
        ),
    ] = None,
    audit: Annotated[
        bool,
        typer.Option(
            envvar="TXVERIFY_HUB_AUDIT",
            help="Audit, duplicates and idempotency (--no-audit only for benchmarks).",
        ),
    ] = _HUB.audit,
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
    ] = _HUB.event_loop,
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
    from txverify.hub.app import RunningHub, run, serve  # the CLI may start the hub
    from txverify.hub.identity import IdentityMode
    from txverify.hub.resilience.breaker import BreakerSettings
    from txverify.hub.resilience.ratelimit import RateLimit
    from txverify.hub.settings import ConsoleSettings, HubSettings

    logs.configure(log_level)

    def announce(bound: int) -> None:
        if ready_line:
            print(READY_PREFIX + json.dumps({"address": f"{host}:{bound}"}), flush=True)

    def report(running: RunningHub) -> None:
        if running.console is None:
            announce(running.port)
            return
        # The token goes to the terminal (and the ready line, for `txverify up`),
        # never to the log, which may be shipped elsewhere.
        token = running.console.settings.token
        err.print(f"console: {running.console.url}  operator token: {token}", soft_wrap=True)
        if ready_line:
            ready = {"address": f"{host}:{running.port}", "console": running.console.url,
                     "console_token": token}  # fmt: skip
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
            issuer_timeout=issuer_timeout,
            max_in_flight_per_issuer=max_in_flight,
            breaker=BreakerSettings(breaker_failures, breaker_cooldown, breaker_failing_seconds),
            drain_delay=drain_delay,
            grace=grace,
            metrics_port=metrics_port,
            audit=audit,
            event_loop=event_loop,
            console=ConsoleSettings(console, host="127.0.0.1", simulator=console_simulator)
            if console is not None
            else None,
        )
        if workers == 1:
            run(serve(settings, report), event_loop=event_loop)
            return
        from txverify.hub.workers import run_workers  # forks before any gRPC object exists

        code = run_workers(settings, workers, announce)
    except (ValueError, OSError) as exc:
        err.print(f"[red]hub: {exc}[/]")
        raise typer.Exit(1) from None
    if code:
        raise typer.Exit(code)


@app.command()
def banks(
    codes: Annotated[
        str, typer.Option(envvar="TXVERIFY_BANKS_CODES", help="Member codes to simulate.")
    ] = ",".join(DEFAULT_BANKS),
    host: Annotated[
        str,
        typer.Option(
            envvar="TXVERIFY_BANKS_HOST",
            help="Address to listen on (loopback only without --certs).",
        ),
    ] = _BANKS.host,
    control_port: Annotated[
        int,
        typer.Option(envvar="TXVERIFY_BANKS_CONTROL_PORT", help="Control (BankSimulator) port."),
    ] = _BANKS.control_port,
    seed: Annotated[
        int, typer.Option(envvar="TXVERIFY_BANKS_SEED", help="Seed of the simulated ledgers.")
    ] = _BANKS.seed,
    transactions: Annotated[
        int,
        typer.Option(
            envvar="TXVERIFY_BANKS_TRANSACTIONS", help="Transactions seeded per new bank."
        ),
    ] = _BANKS.transactions,
    data: Annotated[
        Path | None,
        typer.Option(envvar="TXVERIFY_BANKS_DATA", help="Keep ledgers in this directory."),
    ] = None,
    retention_days: Annotated[
        int,
        typer.Option(envvar="TXVERIFY_BANKS_RETENTION_DAYS", help="Days a slip stays verifiable."),
    ] = _BANKS.retention_days,
    certs: Annotated[
        Path | None,
        typer.Option(
            envvar="TXVERIFY_BANKS_CERTS",
            help="Certificate directory: the issuer ports (the hub's certificate) and the "
            "control API (the operator's or QA's) require mTLS.",
        ),
    ] = None,
    log_level: Annotated[
        str, typer.Option(envvar="TXVERIFY_BANKS_LOG_LEVEL", help="DEBUG, INFO, WARNING or ERROR.")
    ] = "INFO",
    issuer_port: Annotated[
        list[str] | None,
        typer.Option(
            envvar="TXVERIFY_BANKS_ISSUER_PORT",
            help="CODE=PORT: a fixed issuer port for a bank (repeatable; others: any free port).",
        ),
    ] = None,
) -> None:
    """Run simulated banks alone (issuer ports chosen freely unless given); prints one ready
    line (JSON)."""
    from txverify.simulators.bank import SlipVisibility
    from txverify.simulators.ledger import TxStatus
    from txverify.simulators.server import RunningSimulator, serve_simulator

    logs.configure(log_level)

    def report(sim: RunningSimulator) -> None:
        listed = []
        for code, node in sim.nodes.items():
            bank = node.bank
            samples = [
                {"qr_text": s.qr_text, "amount_satang": s.transaction.amount}
                for s in bank.list_slips(50, None)
                if bank.visibility(s.transaction) is SlipVisibility.VISIBLE
                and s.transaction.status is TxStatus.COMPLETED
            ][:3]
            listed.append(
                {
                    "code": code,
                    "short_name": bank.profile.short_name,
                    "name": bank.profile.name,
                    "kind": bank.profile.kind.value,
                    "address": node.address,
                    "samples": samples,
                }
            )
        ready = {"control": sim.control_address, "banks": listed}
        print(READY_PREFIX + json.dumps(ready, ensure_ascii=False), flush=True)

    ports: dict[str, int] = {}
    for item in issuer_port or []:
        code, _, number = item.partition("=")
        if not number.isdigit():
            raise typer.BadParameter(
                f"{item!r}: give CODE=PORT, e.g. 014=50114", param_hint="--issuer-port"
            )
        ports[code.strip()] = int(number)
    try:
        settings = SimulatorSettings(
            codes=tuple(_codes(codes)),
            issuer_ports=ports,
            host=host,
            control_port=control_port,
            data_dir=data,
            seed=seed,
            transactions=transactions,
            retention_days=retention_days,
            pki=certs,
        )
    except ValueError as exc:  # the options do not make valid settings: a usage error
        err.print(f"[red]banks: {escape(str(exc))}[/]")
        raise typer.Exit(EXIT_BAD_INPUT) from None
    try:
        asyncio.run(serve_simulator(settings, report))
    except (ValueError, OSError) as exc:
        err.print(f"[red]banks: {escape(str(exc))}[/]")
        raise typer.Exit(1) from None


app.command(epilog=verifycmd.EPILOG)(verifycmd.verify)
app.command("audit")(auditcmd.audit)
app.command("load")(loadcmd.load)
app.add_typer(scenario_app, name="scenario")
app.command()(simulatorcmd.slip)
app.add_typer(members.app, name="members")
app.add_typer(cluster_app, name="cluster")
app.add_typer(certs_cli.app, name="certs")
app.command()(simulatorcmd.reverse)
app.command()(simulatorcmd.faults)
app.add_typer(simulatorcmd.slips_app, name="slips")


class _ClosedPipeSafe:
    """stdout that a reader may close (`txverify verify ... | head -1`): once the pipe is
    gone, what is left to print goes nowhere and the command still ends with the exit
    code it documents (Python would report the BrokenPipeError and exit 1 or 120)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._gone()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._gone()

    def _gone(self) -> None:
        # The Python docs' recipe: the descriptor onto /dev/null, so that the flush at
        # exit finds nothing to fail on either.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self._stream.fileno())
        os.close(devnull)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def main() -> None:
    """Entry point of the `txverify` script."""
    sys.stdout = _ClosedPipeSafe(sys.stdout)
    app(prog_name="txverify")


if __name__ == "__main__":
    main()
