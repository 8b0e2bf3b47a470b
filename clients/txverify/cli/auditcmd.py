"""`txverify audit`: read the hub's audit trail (operators: everything; members: their own)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import grpc
import typer
from rich.console import Console
from rich.table import Table

from txverify import units
from txverify.cli.failures import HUB, failure_line
from txverify.cli.network import resolve_target
from txverify.cli.options import CertsOpt, HubOpt, bangkok_time
from txverify.client import DEFAULT_HUB, hub_channel
from txverify.client.answers import message_json
from txverify.errors import details_of
from txverify.runtime import tls
from txverify.v1 import audit_pb2, audit_pb2_grpc, verification_pb2
from txverify.wire import MEMBER_HEADER

out = Console()
err = Console(stderr=True, soft_wrap=True)


def audit(
    since: Annotated[str | None, typer.Option(help="From (ISO, Bangkok time).")] = None,
    until: Annotated[str | None, typer.Option(help="Before (ISO, Bangkok time).")] = None,
    member: Annotated[str, typer.Option(help="Only this requester member.")] = "",
    ref: Annotated[str, typer.Option(help="Only this transRef.")] = "",
    request_id: Annotated[str, typer.Option(help="Only this request id.")] = "",
    limit: Annotated[int, typer.Option(help="At most this many records (1-10000).")] = 100,
    as_member: Annotated[
        str, typer.Option("--as", help="Read as this member instead of as operator.")
    ] = "",
    hub_address: HubOpt = None,
    certs: CertsOpt = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one AuditRecord per line, as proto3 JSON.")
    ] = False,
) -> None:
    """Query the audit trail: one record per Verify, newest first, no personal data."""
    request = audit_pb2.QueryAuditRequest(
        member=member, trans_ref=ref, request_id=request_id, limit=limit
    )
    for field, value in (
        ("since", bangkok_time(since, "--since")),
        ("until", bangkok_time(until, "--until")),
    ):
        if value is not None:
            getattr(request, field).CopyFrom(units.to_timestamp(value))
    identity = as_member or tls.OPERATOR
    hub, _, certs = resolve_target(hub_address, identity, certs, default_hub=DEFAULT_HUB)
    metadata = () if certs else ((MEMBER_HEADER, identity),)
    with hub_channel(hub, certs=certs, identity=identity) as channel:
        try:
            reply = audit_pb2_grpc.AuditLogStub(channel).QueryAudit(
                request, metadata=metadata, timeout=30
            )
        except grpc.RpcError as error:
            d = details_of(error)
            err.print(failure_line(d, hub, HUB))
            raise typer.Exit(2 if d.status == grpc.StatusCode.INVALID_ARGUMENT else 1) from None
    if as_json:  # one AuditRecord per line, as proto3 JSON
        for record in reply.records:
            print(json.dumps(message_json(record), ensure_ascii=False))
        return
    rows: list[dict[str, Any]] = [
        {
            "at": units.bangkok(units.from_timestamp(r.at)).isoformat(),
            "requestId": r.request_id,
            "requester": r.requester,
            "requesterReference": r.requester_reference,
            "issuer": r.issuer,
            "transRef": r.trans_ref,
            "status": r.status,
            "reason": r.reason,
            "verdict": verification_pb2.Verdict.Name(r.verdict).removeprefix("VERDICT_"),
            "latencyUs": r.latency_us,
            "replayed": r.replayed,
            "traceId": r.trace_id,
        }
        for r in reply.records
    ]
    traced = any(r["traceId"] for r in rows)  # the column only when some request was traced
    table = Table(title=f"Audit ({len(rows)} records)", title_justify="left")
    for col in ("at (Bangkok)", "request id", "requester", "issuer", "transRef", "outcome", "ms"):
        table.add_column(col)
    if traced:
        table.add_column("trace id", no_wrap=True)
    for r in rows:
        outcome = r["verdict"] if r["status"] == "OK" else f"{r['status']} {r['reason']}"
        table.add_row(
            r["at"][:19].replace("T", " "),
            r["requestId"],
            r["requester"] + (f"/{r['requesterReference']}" if r["requesterReference"] else ""),
            r["issuer"],
            r["transRef"],
            outcome + (" (replay)" if r["replayed"] else ""),
            f"{r['latencyUs'] / 1000:.1f}",
            *([r["traceId"]] if traced else []),
        )
    out.print(table)
