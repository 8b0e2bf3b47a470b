"""Commands that drive the simulated banks: slips, reversals, faults, slip export."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import grpc
import typer
from rich.console import Console
from rich.table import Table

from txverify import units
from txverify.cli import slipkinds
from txverify.cli.failures import SIMULATOR, failure_line
from txverify.cli.network import NetworkError, load_network
from txverify.cli.options import ControlOpt, bangkok_time
from txverify.cli.render import transaction_table
from txverify.cli.slipkinds import iter_slips
from txverify.client.answers import message_json
from txverify.client.channels import control_channel
from txverify.errors import details_of
from txverify.v1 import common_pb2, simulator_pb2, simulator_pb2_grpc

out = Console()
err = Console(stderr=True, soft_wrap=True)
CertsOpt = Annotated[
    Path | None,
    typer.Option(
        envvar="TXVERIFY_CERTS",
        help="Certificate directory: call the control API over mTLS as the operator "
        "(or QA) (default: the one `txverify up --tls` recorded).",
    ),
]
_PROXY_TYPES = {
    "MSISDN": common_pb2.PROXY_TYPE_MSISDN,
    "NATID": common_pb2.PROXY_TYPE_NATID,
    "EWALLETID": common_pb2.PROXY_TYPE_EWALLETID,
    "EMAIL": common_pb2.PROXY_TYPE_EMAIL,
    "BILLERID": common_pb2.PROXY_TYPE_BILLERID,
}


def control_target(given: str | None, certs: Path | None) -> tuple[str, Path | None]:
    """The control address and certificate directory: as given, else as `txverify up`
    recorded (its certificates only for the control address it recorded)."""
    try:
        network = load_network()
    except NetworkError as exc:
        if given:
            return given, certs
        err.print(f"[red]{exc}[/] (or pass --control HOST:PORT)")
        raise typer.Exit(1) from None
    if given and given != network.get("control"):
        return given, certs
    recorded = network.get("certs")
    return given or str(network["control"]), certs or (Path(recorded) if recorded else None)


def _stub(control: str | None, certs: Path | None) -> tuple[grpc.Channel, Any]:
    address, certs = control_target(control, certs)
    try:
        channel = control_channel(address, certs=certs)
    except OSError as exc:  # a certificate or key file missing or unreadable
        err.print(f"[red]certificates in {certs}: {exc}[/]")
        raise typer.Exit(1) from None
    return channel, simulator_pb2_grpc.BankSimulatorStub(channel)


def _fail(error: grpc.RpcError, control: str | None) -> typer.Exit:
    d = details_of(error)
    err.print(failure_line(d, control_target(control, None)[0], SIMULATOR))
    return typer.Exit(2 if d.status == grpc.StatusCode.INVALID_ARGUMENT else 1)


def _guess_proxy(value: str) -> common_pb2.Proxy:
    digits = value.replace("-", "").replace(" ", "")
    if "@" in value:
        kind = "EMAIL"
    elif digits.startswith(("+66", "0066")) or (len(digits) == 10 and digits.startswith("0")):
        kind = "MSISDN"
    elif len(digits) == 13 and digits.isascii() and digits.isdigit():
        kind = "NATID"
    elif len(digits) == 15 and digits.isascii() and digits.isdigit():
        kind = "EWALLETID"
    else:
        raise typer.BadParameter(
            f"cannot tell what {value!r} is: use a mobile number (0812345678), a 13-digit "
            "national ID, a 15-digit e-wallet ID, an e-mail, or --to-account / --proxy-type",
            param_hint="--to",
        )
    return common_pb2.Proxy(type=_PROXY_TYPES[kind], value=value)


def slip(
    from_bank: Annotated[str, typer.Option(help="Sending member code, e.g. 004.")],
    amount: Annotated[str, typer.Option(help="Amount in baht, e.g. 150.00.")],
    to: Annotated[
        str | None, typer.Option(help="Receiver's PromptPay proxy (mobile, national ID, ...).")
    ] = None,
    to_account: Annotated[str | None, typer.Option(help="Receiver's account number.")] = None,
    proxy_type: Annotated[
        str | None, typer.Option(help="Proxy type of --to when it is ambiguous (e.g. BILLERID).")
    ] = None,
    to_bank: Annotated[str, typer.Option(help="Receiving bank code (default: same bank).")] = "",
    from_account: Annotated[str, typer.Option(help="Account to debit (default: any).")] = "",
    fee: Annotated[str, typer.Option(help="Fee in baht.")] = "0",
    ref1: Annotated[str, typer.Option(help="Bill payment reference 1.")] = "",
    ref2: Annotated[str, typer.Option(help="Bill payment reference 2.")] = "",
    ref3: Annotated[str, typer.Option(help="Bill payment reference 3.")] = "",
    merchant: Annotated[str, typer.Option(help="Merchant ID (toMerchantId).")] = "",
    png: Annotated[Path | None, typer.Option(help="Write the slip as a PNG image here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    time: Annotated[
        str | None,
        typer.Option(
            "--time",
            help="A backdated transfer (simulator only): when it was made, ISO date-time, "
            "e.g. 2026-11-12T10:00 (Bangkok time unless an offset is given).",
        ),
    ] = None,
    control: ControlOpt = None,
    certs: CertsOpt = None,
) -> None:
    """Transfer money at a simulated bank and print the slip it issues."""
    if (to is None) == (to_account is None):
        raise typer.BadParameter("give exactly one of --to (a proxy) and --to-account")
    made_at = bangkok_time(time, "--time")
    try:
        request = simulator_pb2.TransferRequest(
            bank=from_bank,
            from_account=from_account,
            to_bank=to_bank,
            amount_satang=units.parse_baht(amount),
            fee_satang=units.parse_baht(fee),
            ref1=ref1,
            ref2=ref2,
            ref3=ref3,
            to_merchant_id=merchant,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if made_at is not None:
        request.trans_time.CopyFrom(units.to_timestamp(made_at))
    if to_account is not None:
        request.to_account = to_account
    elif proxy_type:
        kind = _PROXY_TYPES.get(proxy_type.upper())
        if kind is None:
            raise typer.BadParameter(f"one of {', '.join(_PROXY_TYPES)}", param_hint="--proxy-type")
        request.to_proxy.CopyFrom(common_pb2.Proxy(type=kind, value=to or ""))
    else:
        request.to_proxy.CopyFrom(_guess_proxy(to or ""))
    channel, stub = _stub(control, certs)
    with channel:
        try:
            response: simulator_pb2.TransferResponse = stub.Transfer(request, timeout=10)
        except grpc.RpcError as error:
            raise _fail(error, control) from None
    if png is not None:
        from txverify.slipimage import render_slip_png

        png.write_bytes(render_slip_png(response.transaction, response.qr_text))
    if as_json:
        print(json.dumps(message_json(response), ensure_ascii=False, indent=2))
        return
    out.print(transaction_table(response.transaction, title="Slip"))
    out.print(f"QR: {response.qr_text}", markup=False, soft_wrap=True)
    out.print(f"sender's balance: {units.format_baht(response.balance_satang)} THB")
    if png is not None:
        out.print(f"slip image written to {png}")


def reverse(
    bank: Annotated[str, typer.Argument(help="Sending member code.")],
    trans_ref: Annotated[str, typer.Argument(help="transRef of the transfer.")],
    control: ControlOpt = None,
    certs: CertsOpt = None,
) -> None:
    """Reverse a transfer: the sender is refunded and the slip verifies as REVERSED."""
    channel, stub = _stub(control, certs)
    with channel:
        try:
            response = stub.Reverse(
                simulator_pb2.ReverseRequest(bank=bank, trans_ref=trans_ref), timeout=10
            )
        except grpc.RpcError as error:
            raise _fail(error, control) from None
    out.print(transaction_table(response.transaction, title="Reversed"))


def faults(
    bank: Annotated[str, typer.Argument(help="Member code of the simulated bank.")],
    latency_ms: Annotated[int | None, typer.Option(help="Added delay per inquiry.")] = None,
    jitter_ms: Annotated[int | None, typer.Option(help="Plus random 0..jitter ms.")] = None,
    error_rate: Annotated[
        float | None, typer.Option(help="Share of failed inquiries, 0-1.")
    ] = None,
    error_status: Annotated[
        str | None, typer.Option(help="gRPC status of injected errors (UNAVAILABLE).")
    ] = None,
    hang: Annotated[bool | None, typer.Option("--hang/--no-hang", help="Never answer.")] = None,
    refuse: Annotated[
        bool | None, typer.Option("--refuse/--no-refuse", help="Close the issuer port.")
    ] = None,
    flap: Annotated[
        str | None, typer.Option(help="DOWN/PERIOD seconds: down DOWN s every PERIOD s; 0 stops.")
    ] = None,
    visibility_delay_ms: Annotated[
        int | None, typer.Option(help="Slips stay invisible this long after a transfer.")
    ] = None,
    pending_ms: Annotated[
        int | None,
        typer.Option(help="New transfers stay pending (SLIP_PENDING) this long, then settle."),
    ] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Remove every fault first.")] = False,
    control: ControlOpt = None,
    certs: CertsOpt = None,
) -> None:
    """Show a simulated bank's faults, or change them (only the options given change)."""
    channel, stub = _stub(control, certs)
    with channel:
        try:
            current = stub.GetFaults(simulator_pb2.GetFaultsRequest(bank=bank), timeout=10)
            spec = simulator_pb2.Faults() if clear else current.faults
            changes: dict[str, Any] = {
                "latency_ms": latency_ms,
                "jitter_ms": jitter_ms,
                "error_rate": error_rate,
                "error_status": error_status,
                "hang": hang,
                "refuse": refuse,
                "visibility_delay_ms": visibility_delay_ms,
                "pending_ms": pending_ms,
            }
            if flap is not None:
                down, _, period = flap.partition("/")
                try:
                    changes["flap_down_s"] = int(down)
                    changes["flap_period_s"] = int(period or 0)
                except ValueError:
                    raise typer.BadParameter(
                        "DOWN/PERIOD in seconds, e.g. 5/20", param_hint="--flap"
                    ) from None
            for name, value in changes.items():
                if value is not None:
                    if isinstance(value, int) and not isinstance(value, bool) and value < 0:
                        raise typer.BadParameter(f"--{name.replace('_', '-')} must not be negative")
                    setattr(spec, name, value)
            if clear or any(v is not None for v in changes.values()):
                current = stub.SetFaults(
                    simulator_pb2.SetFaultsRequest(bank=bank, faults=spec), timeout=10
                )
        except grpc.RpcError as error:
            raise _fail(error, control) from None
    f = current.faults
    table = Table(title=f"Faults of {bank}", show_header=False, title_justify="left")
    for key, value in (
        ("issuer listening", "yes" if current.issuer_listening else "NO (refusing)"),
        ("latency", f"{f.latency_ms} ms + 0..{f.jitter_ms} ms"),
        ("errors", f"{f.error_rate:.0%} as {f.error_status or 'UNAVAILABLE'}"),
        ("hang", "yes" if f.hang else "no"),
        ("refuse", "yes" if f.refuse else "no"),
        ("flap", f"down {f.flap_down_s} s every {f.flap_period_s} s" if f.flap_down_s else "no"),
        ("visibility delay", f"{f.visibility_delay_ms} ms"),
        ("pending window", f"{f.pending_ms} ms"),
    ):
        table.add_row(key, value)
    out.print(table)


slips_app = typer.Typer(help="Slips of the simulated banks, for load tools.", no_args_is_help=True)


@slips_app.command("export")
def export(
    count: Annotated[int, typer.Option(help="Slips of existing, verifiable transactions.")],
    expired: Annotated[int, typer.Option(help="Plus slips older than retention.")] = 0,
    pending: Annotated[
        int, typer.Option(help="Plus slips not settled yet (inside a bank's pending window).")
    ] = 0,
    not_found: Annotated[int, typer.Option(help="Plus well-formed slips nobody issued.")] = 0,
    malformed: Annotated[int, typer.Option(help="Plus QR texts with a broken CRC.")] = 0,
    unknown_issuer: Annotated[
        int, typer.Option(help="Plus slips naming a bank that is not a member (071).")
    ] = 0,
    kinds: Annotated[
        bool, typer.Option("--kinds", help="Prefix each line with its kind and a tab.")
    ] = False,
    control: ControlOpt = None,
    certs: CertsOpt = None,
) -> None:
    """Write QR texts, one per line, to stdout; banks take turns so every issuer is used."""
    wanted = {
        "valid": count,
        "expired": expired,
        "pending": pending,
        "notfound": not_found,
        "malformed": malformed,
        "unknownissuer": unknown_issuer,
    }
    if any(n < 0 for n in wanted.values()):
        raise typer.BadParameter("counts must not be negative")
    channel, stub = _stub(control, certs)
    with channel:
        try:
            banks = [
                b.code for b in stub.ListBanks(simulator_pb2.ListBanksRequest(), timeout=10).banks
            ]
            states = {
                simulator_pb2.SLIP_STATE_VISIBLE: "valid",
                simulator_pb2.SLIP_STATE_EXPIRED: "expired",
                simulator_pb2.SLIP_STATE_PENDING: "pending",
            }
            pools: dict[str, dict[str, list[str]]] = {k: {} for k in states.values()}
            for bank in banks:
                for kind in states.values():
                    pools[kind][bank] = []
                for s in iter_slips(stub, bank):
                    if s.state in states:
                        pools[states[s.state]][bank].append(s.qr_text)
        except grpc.RpcError as error:
            raise _fail(error, control) from None
    lines: list[tuple[str, str]] = []
    for kind in ("valid", "expired", "pending"):
        picked = slipkinds.round_robin(pools[kind], wanted[kind])
        if len(picked) < wanted[kind]:
            err.print(
                f"[red]only {len(picked)} {kind} slips exist, {wanted[kind]} asked[/]: "
                "start the network with more --transactions (pending: transfer at a bank "
                "with a pending window)"
            )
            raise typer.Exit(1)
        lines += [(kind, qr) for qr in picked]
    lines += [("notfound", qr) for qr in slipkinds.not_found(banks, wanted["notfound"])]
    valid = [qr for _, qr in lines if _ == "valid"] or ["0041000600000101030140220" + "A" * 20]
    lines += [
        ("malformed", slipkinds.broken(valid[i % len(valid)], i))
        for i in range(wanted["malformed"])
    ]
    lines += [
        ("unknownissuer", slipkinds.unknown_issuer(i)) for i in range(wanted["unknownissuer"])
    ]
    for kind, qr in lines:
        sys.stdout.write(f"{kind}\t{qr}\n" if kinds else f"{qr}\n")
