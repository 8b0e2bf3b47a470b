"""`txverify usage`: a member's usage and what is left (the hub's UsageService)."""

from __future__ import annotations

import json
from typing import Annotated

import grpc
import typer
from rich.console import Console
from rich.table import Table

from txverify import units
from txverify.cli.failures import HUB, failure_line
from txverify.cli.network import resolve_target
from txverify.cli.options import CertsOpt, HubOpt
from txverify.client import DEFAULT_HUB, TxVerifyClient
from txverify.client.answers import message_json
from txverify.client.errors import VerifyFailed
from txverify.runtime import tls
from txverify.v1 import usage_pb2

out = Console()
err = Console(stderr=True, soft_wrap=True)


def usage(
    member: Annotated[
        str,
        typer.Option(help="Read this member's usage, as operator (default: your own)."),
    ] = "",
    as_member: Annotated[
        str,
        typer.Option(
            "--as",
            envvar="TXVERIFY_MEMBER",
            help="Speak for this member (default: the one `txverify up` recorded; "
            "with --member: the operator).",
        ),
    ] = "",
    hub_address: HubOpt = None,
    certs: CertsOpt = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the GetUsageResponse as proto3 JSON.")
    ] = False,
) -> None:
    """Verifications today and this month, the not-found share, the rate limit, tokens now."""
    identity = as_member or (tls.OPERATOR if member else "")
    hub, identity, certs = resolve_target(hub_address, identity, certs, default_hub=DEFAULT_HUB)
    try:
        with TxVerifyClient(hub, member=identity, certs=certs, timeout=30) as client:
            reply = client.usage(member)
    except VerifyFailed as error:
        err.print(failure_line(error.details, hub, HUB))
        raise typer.Exit(2 if error.status is grpc.StatusCode.INVALID_ARGUMENT else 1) from None
    if as_json:
        print(json.dumps(message_json(reply), ensure_ascii=False))
        return
    out.print(usage_table(reply))


def _ratio(counts: usage_pb2.UsageCounts) -> str:
    return f"{counts.not_found_ratio:.1%}" if counts.verifications else "-"


def usage_table(reply: usage_pb2.GetUsageResponse) -> Table:
    day = units.bangkok(units.from_timestamp(reply.day_start)).date().isoformat()
    month = units.bangkok(units.from_timestamp(reply.month_start)).strftime("%Y-%m")
    table = Table(title=f"Usage of member {reply.member}", title_justify="left")
    table.add_column("")
    table.add_column(f"today ({day})", justify="right")
    table.add_column(f"this month ({month})", justify="right")
    today, this_month = reply.today, reply.this_month
    table.add_row("verifications", f"{today.verifications:,}", f"{this_month.verifications:,}")
    table.add_row("not found", f"{today.not_found:,}", f"{this_month.not_found:,}")
    table.add_row("not-found ratio", _ratio(today), _ratio(this_month))
    limit = reply.rate_limit
    if limit.rate:
        table.add_section()
        table.add_row("rate limit", f"{limit.rate:g}/s, burst {limit.burst}", "")
        table.add_row("tokens now", f"{reply.tokens:.1f}", "")
    else:
        table.add_section()
        table.add_row("rate limit", "none", "")
    table.add_row("not-found cost", f"{reply.not_found_cost} calls", "")
    return table
