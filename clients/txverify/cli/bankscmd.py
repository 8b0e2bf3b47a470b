"""`txverify banks`: simulated banks alone, their flags (or TXVERIFY_BANKS_*) over
SimulatorSettings' defaults."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from txverify.cli.common import (
    BANKS_DEFAULTS,
    EXIT_BAD_INPUT,
    codes_of,
    err,
)
from txverify.cli.network import (
    DEFAULT_BANKS,
    READY_PREFIX,
)
from txverify.runtime import logs
from txverify.simulators.settings import SimulatorSettings


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
    ] = BANKS_DEFAULTS.host,
    control_port: Annotated[
        int,
        typer.Option(envvar="TXVERIFY_BANKS_CONTROL_PORT", help="Control (BankSimulator) port."),
    ] = BANKS_DEFAULTS.control_port,
    seed: Annotated[
        int, typer.Option(envvar="TXVERIFY_BANKS_SEED", help="Seed of the simulated ledgers.")
    ] = BANKS_DEFAULTS.seed,
    transactions: Annotated[
        int,
        typer.Option(
            envvar="TXVERIFY_BANKS_TRANSACTIONS", help="Transactions seeded per new bank."
        ),
    ] = BANKS_DEFAULTS.transactions,
    data: Annotated[
        Path | None,
        typer.Option(envvar="TXVERIFY_BANKS_DATA", help="Keep ledgers in this directory."),
    ] = None,
    retention_days: Annotated[
        int | None,
        typer.Option(
            envvar="TXVERIFY_BANKS_RETENTION_DAYS",
            help="Days a slip stays verifiable at every bank (default: each bank's own, 30 or 7).",
        ),
    ] = BANKS_DEFAULTS.retention_days,
    pending: Annotated[
        list[str] | None,
        typer.Option(
            envvar="TXVERIFY_BANKS_PENDING",
            help="CODE=SECONDS: new transfers at that bank stay pending (SLIP_PENDING) this "
            "long (repeatable; default: settled at once).",
        ),
    ] = None,
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
                    "retention_days": bank.retention_days,
                    "pending_ms": node.faults.pending_ms,
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
    windows: dict[str, float] = {}
    for item in pending or []:
        code, _, number = item.partition("=")
        try:
            windows[code.strip()] = float(number)
        except ValueError:
            raise typer.BadParameter(
                f"{item!r}: give CODE=SECONDS, e.g. 014=30", param_hint="--pending"
            ) from None
    try:
        settings = SimulatorSettings(
            codes=tuple(codes_of(codes)),
            issuer_ports=ports,
            host=host,
            control_port=control_port,
            data_dir=data,
            seed=seed,
            transactions=transactions,
            retention_days=retention_days,
            pending_seconds=windows,
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
