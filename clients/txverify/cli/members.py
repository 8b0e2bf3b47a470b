"""`txverify members`: the operator's view of the member registry (MemberRegistry client)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import grpc
import typer
from google.protobuf import field_mask_pb2
from google.protobuf.message import Message
from rich.console import Console
from rich.table import Table

from txverify import units
from txverify.cli.failures import HUB, failure_line
from txverify.cli.network import NetworkError, load_network
from txverify.cli.options import CertsOpt, HubOpt
from txverify.client import DEFAULT_HUB, hub_channel
from txverify.client.answers import message_json
from txverify.errors import details_of
from txverify.runtime import tls
from txverify.v1 import common_pb2, registry_pb2, registry_pb2_grpc
from txverify.wire import MEMBER_HEADER

app = typer.Typer(help="Manage the hub's members (operator only).", no_args_is_help=True)
out = Console()
err = Console(stderr=True, soft_wrap=True)

_STATUS = {
    registry_pb2.MEMBER_STATUS_ACTIVE: "ACTIVE",
    registry_pb2.MEMBER_STATUS_SUSPENDED: "SUSPENDED",
    registry_pb2.MEMBER_STATUS_TERMINATED: "TERMINATED",
}
_ROLES = {"REQUESTER": registry_pb2.ROLE_REQUESTER, "ISSUER": registry_pb2.ROLE_ISSUER}
_CIRCUIT = {
    registry_pb2.CIRCUIT_STATE_CLOSED: "closed",
    registry_pb2.CIRCUIT_STATE_OPEN: "OPEN",
    registry_pb2.CIRCUIT_STATE_HALF_OPEN: "half-open",
}


def _target(hub: str | None, certs: Path | None) -> tuple[str, Path | None]:
    """The hub and certificate directory: given, or from the network `txverify up` recorded."""
    if hub is not None:
        return hub, certs
    try:
        network = load_network()
    except NetworkError:
        return DEFAULT_HUB, certs
    recorded = network.get("certs")
    return network["hub"], certs or (Path(recorded) if recorded else None)


def _call(hub: str | None, certs: Path | None, rpc: Callable[[Any, Any], Any]) -> Any:
    address, certs = _target(hub, certs)
    metadata = () if certs else ((MEMBER_HEADER, tls.OPERATOR),)
    with hub_channel(address, certs=certs, identity=tls.OPERATOR) as channel:
        stub = registry_pb2_grpc.MemberRegistryStub(channel)
        try:
            return rpc(stub, metadata)
        except grpc.RpcError as error:
            d = details_of(error)
            err.print(failure_line(d, address, HUB))
            raise typer.Exit(2 if d.status == grpc.StatusCode.INVALID_ARGUMENT else 1) from None


def _role(role: str) -> registry_pb2.Role.ValueType:
    value = _ROLES.get(role.upper())
    if value is None:
        raise typer.BadParameter("REQUESTER or ISSUER", param_hint="ROLE")
    return value


def member_row(m: registry_pb2.Member) -> dict[str, Any]:
    return {
        "code": m.code,
        "name": m.name,
        "kind": common_pb2.MemberKind.Name(m.kind).removeprefix("MEMBER_KIND_"),
        "status": _STATUS.get(m.status, "?"),
        "roles": [registry_pb2.Role.Name(s.role).removeprefix("ROLE_") for s in m.subscriptions],
        "issuerEndpoint": m.issuer_endpoint,
        "certIdentity": m.cert_identity or m.code,
        "rateLimitRps": m.rate_limit_rps,
        "rateLimitBurst": m.rate_limit_burst,
        "circuit": _CIRCUIT.get(m.issuer_circuit, ""),
        "updatedAt": units.bangkok(units.from_timestamp(m.updated_at)).isoformat()
        if m.HasField("updated_at")
        else "",
    }


def _print_json(reply: Message) -> None:
    """An answer as proto3 JSON, as the JSON API gives it."""
    print(json.dumps(message_json(reply), ensure_ascii=False, indent=2))


def _show(members: list[registry_pb2.Member]) -> None:
    rows = [member_row(m) for m in members]
    table = Table(title="Members", title_justify="left")
    for col in ("code", "name", "kind", "status", "roles", "issuer", "circuit"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["code"],
            r["name"],
            r["kind"],
            r["status"],
            ",".join(r["roles"]),
            r["issuerEndpoint"],
            r["circuit"],
        )
    out.print(table)


JsonOpt = Annotated[bool, typer.Option("--json", help="Print the answer as proto3 JSON.")]


@app.command("list")
def list_members(hub: HubOpt = None, certs: CertsOpt = None, as_json: JsonOpt = False) -> None:
    """List every member with status, roles and the circuit to its issuer."""
    reply = _call(
        hub,
        certs,
        lambda s, md: s.ListMembers(registry_pb2.ListMembersRequest(), metadata=md, timeout=10),
    )
    if as_json:
        _print_json(reply)
        return
    _show(list(reply.members))


@app.command()
def show(
    code: Annotated[str, typer.Argument(help="Member code.")],
    hub: HubOpt = None,
    certs: CertsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one member and its history of changes."""
    reply = _call(
        hub,
        certs,
        lambda s, md: s.GetMember(
            registry_pb2.GetMemberRequest(code=code, include_history=True), metadata=md, timeout=10
        ),
    )
    if as_json:
        _print_json(reply)
        return
    _show([reply.member])
    history = Table(title="History", title_justify="left")
    for col in ("at (Bangkok)", "actor", "action", "details"):
        history.add_column(col)
    for c in reply.history:
        at = units.bangkok(units.from_timestamp(c.at)).strftime("%Y-%m-%d %H:%M:%S")
        history.add_row(at, c.actor, c.action, c.details)
    out.print(history)


@app.command()
def add(
    code: Annotated[str, typer.Argument(help="Member code (3 digits).")],
    name: Annotated[str, typer.Option(help="Display name.")],
    issuer_endpoint: Annotated[str, typer.Option(help="host:port of its IssuerService.")] = "",
    non_bank: Annotated[bool, typer.Option(help="A non-bank (e-wallet provider).")] = False,
    role: Annotated[
        list[str] | None, typer.Option(help="REQUESTER and/or ISSUER (default: both if issuer).")
    ] = None,
    cert_identity: Annotated[str, typer.Option(help="Its certificate CN (default: code).")] = "",
    rate_limit_rps: Annotated[float, typer.Option(help="Verify/s allowed (0 = default).")] = 0.0,
    rate_limit_burst: Annotated[int, typer.Option(help="Burst (0 = default).")] = 0,
    hub: HubOpt = None,
    certs: CertsOpt = None,
) -> None:
    """Register a member (or a terminated one again)."""
    member = registry_pb2.Member(
        code=code,
        name=name,
        kind=common_pb2.MEMBER_KIND_NON_BANK if non_bank else common_pb2.MEMBER_KIND_BANK,
        issuer_endpoint=issuer_endpoint,
        cert_identity=cert_identity,
        rate_limit_rps=rate_limit_rps,
        rate_limit_burst=rate_limit_burst,
    )
    roles = [_role(r) for r in role or []]
    reply = _call(
        hub,
        certs,
        lambda s, md: s.RegisterMember(
            registry_pb2.RegisterMemberRequest(member=member, roles=roles), metadata=md, timeout=10
        ),
    )
    _show([reply.member])


@app.command()
def update(
    code: Annotated[str, typer.Argument(help="Member code.")],
    name: Annotated[str | None, typer.Option(help="New display name.")] = None,
    issuer_endpoint: Annotated[str | None, typer.Option(help="New host:port.")] = None,
    cert_identity: Annotated[str | None, typer.Option(help="New certificate CN.")] = None,
    rate_limit_rps: Annotated[float | None, typer.Option(help="Verify/s (0 = default).")] = None,
    rate_limit_burst: Annotated[int | None, typer.Option(help="Burst (0 = default).")] = None,
    hub: HubOpt = None,
    certs: CertsOpt = None,
) -> None:
    """Change a member's name, issuer endpoint, certificate identity or rate limit."""
    given = {
        "name": name,
        "issuer_endpoint": issuer_endpoint,
        "cert_identity": cert_identity,
        "rate_limit_rps": rate_limit_rps,
        "rate_limit_burst": rate_limit_burst,
    }
    changes = {k: v for k, v in given.items() if v is not None}
    if not changes:
        raise typer.BadParameter("give at least one field to change")
    request = registry_pb2.UpdateMemberRequest(
        code=code,
        member=registry_pb2.Member(**changes),  # type: ignore[arg-type]
        update_mask=field_mask_pb2.FieldMask(paths=list(changes)),
    )
    reply = _call(hub, certs, lambda s, md: s.UpdateMember(request, metadata=md, timeout=10))
    _show([reply.member])


def _status_command(status: registry_pb2.MemberStatus.ValueType, doc: str) -> Callable[..., None]:
    def command(
        code: Annotated[str, typer.Argument(help="Member code.")],
        reason: Annotated[str, typer.Option(help="Why, for the history.")] = "",
        hub: HubOpt = None,
        certs: CertsOpt = None,
    ) -> None:
        request = registry_pb2.SetMemberStatusRequest(code=code, status=status, reason=reason)
        reply = _call(hub, certs, lambda s, md: s.SetMemberStatus(request, metadata=md, timeout=10))
        _show([reply.member])

    command.__doc__ = doc
    return command


app.command("suspend")(_status_command(registry_pb2.MEMBER_STATUS_SUSPENDED, "Suspend a member."))
app.command("resume")(
    _status_command(registry_pb2.MEMBER_STATUS_ACTIVE, "Resume a suspended member.")
)
app.command("terminate")(
    _status_command(
        registry_pb2.MEMBER_STATUS_TERMINATED,
        "Terminate a member (final: it must register again to come back).",
    )
)


@app.command()
def subscribe(
    code: Annotated[str, typer.Argument(help="Member code.")],
    role: Annotated[str, typer.Argument(help="REQUESTER or ISSUER.")],
    hub: HubOpt = None,
    certs: CertsOpt = None,
) -> None:
    """Subscribe a member to slip verification in a role."""
    request = registry_pb2.SubscribeRequest(code=code, role=_role(role))
    reply = _call(hub, certs, lambda s, md: s.Subscribe(request, metadata=md, timeout=10))
    _show([reply.member])


@app.command()
def unsubscribe(
    code: Annotated[str, typer.Argument(help="Member code.")],
    role: Annotated[str, typer.Argument(help="REQUESTER or ISSUER.")],
    hub: HubOpt = None,
    certs: CertsOpt = None,
) -> None:
    """End a member's subscription to slip verification in a role."""
    request = registry_pb2.UnsubscribeRequest(code=code, role=_role(role))
    reply = _call(hub, certs, lambda s, md: s.Unsubscribe(request, metadata=md, timeout=10))
    _show([reply.member])
