"""The `txverify` command: run a simulated network, run its parts, verify slips."""

from __future__ import annotations

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
from txverify.cli import (
    auditcmd,
    bankscmd,
    hubcmd,
    members,
    simulatorcmd,
    usagecmd,
    verifycmd,
)
from txverify.cli import certs as certs_cli
from txverify.cli.common import (
    BANKS_DEFAULTS,
    HUB_DEFAULTS,
    codes_of,
    err,
    raise_interrupt,
    refuse_plaintext_beyond_loopback,
)
from txverify.cli.load import command as loadcmd
from txverify.cli.network import (
    DEFAULT_BANKS,
    DEFAULT_CONSOLE_PORT,
    DEFAULT_JSON_PORT,
    NetworkError,
    network_file,
    running_network,
    wait_any,
)
from txverify.cli.scenario.command import scenario_app

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
    port: Annotated[int, typer.Option(help="Hub port; 0 picks a free one.")] = HUB_DEFAULTS.port,
    host: HostOption = HUB_DEFAULTS.host,
    banks: BanksOption = DEFAULT_BANK_LIST,
    seed: SeedOption = BANKS_DEFAULTS.seed,
    transactions: TransactionsOption = BANKS_DEFAULTS.transactions,
    data: Annotated[
        Path | None,
        typer.Option(help="Keep ledgers in this directory across restarts (default: temporary)."),
    ] = None,
    retention_days: Annotated[
        int | None,
        typer.Option(help="Days a slip stays verifiable at every bank (default: each bank's own)."),
    ] = BANKS_DEFAULTS.retention_days,
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
    json_port: Annotated[
        int,
        typer.Option(
            help="The hub's JSON API port (Connect protocol; 0 = any free port, -1 = none)."
        ),
    ] = DEFAULT_JSON_PORT,
) -> None:
    """Run the hub and simulated banks in the foreground; Ctrl-C stops them."""
    if console < -1 or console > 65535:
        raise typer.BadParameter("the console port is 0-65535, or -1 for no console")
    if json_port < -1 or json_port > 65535:
        raise typer.BadParameter("the JSON API port is 0-65535, or -1 for none")
    if not use_tls:
        refuse_plaintext_beyond_loopback("up", host)
    _refuse_ports_in_use(
        "up",
        [(host, port, "--port"), ("127.0.0.1", console, "--console"),
         (host, json_port, "--json-port")],
    )  # fmt: skip
    _serve_network(
        banks=codes_of(banks),
        hub_host=host,
        hub_port=port,
        seed=seed,
        transactions=transactions,
        data_dir=data,
        extra_sim_args=("--retention-days", str(retention_days)) if retention_days else (),
        certs=(certs or (data / "certs" if data else None)) if use_tls else None,
        use_tls=use_tls,
        hub_extra_args=hub_arg or (),
        console_port=None if console == -1 else console,
        json_port=None if json_port == -1 else json_port,
    )


app.command()(hubcmd.hub)
app.command()(bankscmd.banks)


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
            "(another `txverify up`?), or pass --port 0 --console 0 --json-port 0 for free ports"
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
    signal.signal(signal.SIGTERM, raise_interrupt)
    signal.signal(signal.SIGINT, raise_interrupt)
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
            if network.json_api:
                out.print(f"  json api: [bold]{network.json_api}[/]", soft_wrap=True)
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
    port: Annotated[
        int, typer.Option(help="nginx's port; 0 picks a free one.")
    ] = HUB_DEFAULTS.port,
    host: HostOption = HUB_DEFAULTS.host,
    banks: BanksOption = DEFAULT_BANK_LIST,
    seed: SeedOption = BANKS_DEFAULTS.seed,
    transactions: TransactionsOption = BANKS_DEFAULTS.transactions,
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
    refuse_plaintext_beyond_loopback("cluster up", host)  # it runs without TLS
    extra = [*(hub_arg or [])]
    if rate_limit_store:
        extra += ["--rate-limit-store", rate_limit_store]
    _serve_network(
        banks=codes_of(banks),
        hub_host=host,
        hub_port=port,
        seed=seed,
        transactions=transactions,
        data_dir=None,
        replicas=replicas,
        db=db,
        hub_extra_args=extra,
    )


app.command(epilog=verifycmd.EPILOG)(verifycmd.verify)
app.command("audit")(auditcmd.audit)
app.command("usage")(usagecmd.usage)
app.add_typer(loadcmd.load_app, name="load")
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
