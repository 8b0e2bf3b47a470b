"""`txverify verify`: check a slip through the hub, with the merchant's expectations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from txverify import units
from txverify.cli.failures import HUB, failure_line
from txverify.cli.network import resolve_target
from txverify.cli.options import CertsOpt, HubOpt, MemberOpt, bangkok_time
from txverify.cli.render import transaction_table
from txverify.client import DEFAULT_HUB, SlipQuery, TxVerifyClient, VerifyFailed
from txverify.client.answers import error_json, message_json
from txverify.v1 import common_pb2, verification_pb2
from txverify.wire import MAX_SLIP_IMAGE_BYTES

out = Console()
err = Console(stderr=True, soft_wrap=True)
V = verification_pb2

EXIT_VALID = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_NOT_FOUND = 3
EXIT_UNAVAILABLE = 4
EXIT_MISMATCH = 5
EXIT_DUPLICATE = 6
EXIT_INCONCLUSIVE = 7
EPILOG = (
    "Exit codes: 0 valid; 5 mismatch (an expectation failed, or the transfer was reversed); "
    "6 duplicate (verified before by you); 7 inconclusive (an expectation could not be "
    "checked); 2 bad input (malformed QR or request); 3 not found (slip, expired slip, or "
    "issuer not a member); 4 issuer or hub unavailable or too slow; 1 any other failure "
    "(e.g. not allowed)."
)
_EXIT_BY_STATUS = {
    "INVALID_ARGUMENT": EXIT_BAD_INPUT,
    "NOT_FOUND": EXIT_NOT_FOUND,
    "UNAVAILABLE": EXIT_UNAVAILABLE,
    "DEADLINE_EXCEEDED": EXIT_UNAVAILABLE,
}
_EXIT_BY_VERDICT = {
    V.VERDICT_VALID: EXIT_VALID,
    V.VERDICT_MISMATCH: EXIT_MISMATCH,
    V.VERDICT_DUPLICATE: EXIT_DUPLICATE,
    V.VERDICT_INCONCLUSIVE: EXIT_INCONCLUSIVE,
}
_PROXY_KINDS = {
    "MSISDN": common_pb2.PROXY_TYPE_MSISDN,
    "NATID": common_pb2.PROXY_TYPE_NATID,
    "EWALLETID": common_pb2.PROXY_TYPE_EWALLETID,
    "EMAIL": common_pb2.PROXY_TYPE_EMAIL,
    "BILLERID": common_pb2.PROXY_TYPE_BILLERID,
}


def _satang(text: str | None, flag: str) -> int | None:
    if text is None:
        return None
    try:
        return units.parse_baht(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=flag) from None


def _when(text: str | None, flag: str) -> Any:
    moment = bangkok_time(text, flag)
    return None if moment is None else units.to_timestamp(moment)


def _receiver(text: str) -> V.ReceiverExpectation:
    """'1234567890' (an account), or 'MSISDN:0812345678' / 'NATID:...' / 'EMAIL:...' (a proxy)."""
    kind, sep, value = text.partition(":")
    if sep:
        proxy_type = _PROXY_KINDS.get(kind.upper())
        if proxy_type is None:
            raise typer.BadParameter(
                f"proxy type must be one of {', '.join(_PROXY_KINDS)}", param_hint="--receiver"
            )
        return V.ReceiverExpectation(proxy=common_pb2.Proxy(type=proxy_type, value=value))
    return V.ReceiverExpectation(account=text)


def expectations(
    amount: str | None,
    at_least: str | None,
    at_most: str | None,
    receivers: list[str] | None,
    receiving_bank: str | None,
    since: str | None,
    until: str | None,
) -> V.Expectations:
    expect = V.Expectations()
    for field, value in (
        ("equals_satang", _satang(amount, "--amount")),
        ("at_least_satang", _satang(at_least, "--amount-at-least")),
        ("at_most_satang", _satang(at_most, "--amount-at-most")),
    ):
        if value is not None:
            setattr(expect.amount, field, value)
    expect.receivers.extend(_receiver(r) for r in receivers or [])
    if receiving_bank:
        expect.receiving_bank = receiving_bank
    for field, stamp in (
        ("not_before", _when(since, "--since")),
        ("not_after", _when(until, "--until")),
    ):
        if stamp is not None:
            getattr(expect, field).CopyFrom(stamp)
    return expect


def image_bytes(path: Path) -> bytes:
    """A slip image's bytes for the hub to read, or exit 2 saying why they cannot be sent."""
    try:
        size = path.stat().st_size
        if size > MAX_SLIP_IMAGE_BYTES:
            err.print(
                f"[red]{escape(str(path))} is {size:,} bytes; the hub reads slip images of up "
                f"to {MAX_SLIP_IMAGE_BYTES // 1024 // 1024} MiB[/]"
            )
            raise typer.Exit(EXIT_BAD_INPUT)
        data = path.read_bytes()
    except OSError as exc:
        err.print(f"[red]cannot read the slip image {escape(str(path))}:[/] {exc.strerror or exc}")
        raise typer.Exit(EXIT_BAD_INPUT) from None
    if not data:
        err.print(f"[red]the slip image {escape(str(path))} is empty[/]")
        raise typer.Exit(EXIT_BAD_INPUT)
    return data


def _show(response: V.VerifyResponse) -> None:
    verdict = V.Verdict.Name(response.verdict).removeprefix("VERDICT_")
    colour = {"VALID": "green", "DUPLICATE": "yellow"}.get(verdict, "red")
    replay = " (replayed answer)" if response.replayed else ""
    out.print(f"Verdict: [bold {colour}]{verdict}[/]{replay}")
    table = Table(show_header=True, title_justify="left")
    for col in ("check", "outcome", "expected", "observed"):
        table.add_column(col)
    for c in response.checks:
        table.add_row(
            V.Check.Name(c.check).removeprefix("CHECK_"),
            V.CheckOutcome.Name(c.outcome).removeprefix("CHECK_OUTCOME_"),
            c.expected,
            c.observed,
        )
    out.print(table)
    dup = response.duplicate
    if dup.previous_count:
        first = units.bangkok(units.from_timestamp(dup.first_verified_at)).isoformat()
        out.print(
            f"Verified {dup.previous_count} time(s) before, first at {first} "
            f"by member {dup.first_verified_by}; {dup.previous_count_in_scope} time(s) by you."
        )
    out.print(transaction_table(response.transaction))


def verify(
    qr_text: Annotated[str | None, typer.Argument(help="The slip's mini QR text.")] = None,
    bank: Annotated[str | None, typer.Option(help="Sending bank code (with --ref).")] = None,
    ref: Annotated[str | None, typer.Option(help="transRef (with --bank).")] = None,
    image: Annotated[
        Path | None,
        typer.Option(help="A slip image (PNG, JPEG or WebP, up to 2 MiB), read by the hub."),
    ] = None,
    amount: Annotated[str | None, typer.Option(help="Expected amount in baht, exactly.")] = None,
    amount_at_least: Annotated[str | None, typer.Option(help="At least, in baht.")] = None,
    amount_at_most: Annotated[str | None, typer.Option(help="At most, in baht.")] = None,
    receiver: Annotated[
        list[str] | None,
        typer.Option(
            help="Expected receiver: an account number, or TYPE:VALUE (MSISDN:0812345678). "
            "Repeat for several; one must match."
        ),
    ] = None,
    receiving_bank: Annotated[str | None, typer.Option(help="Expected receiving bank.")] = None,
    since: Annotated[str | None, typer.Option(help="Paid at or after (ISO, Bangkok).")] = None,
    until: Annotated[str | None, typer.Option(help="Paid at or before (ISO, Bangkok).")] = None,
    reference: Annotated[
        str, typer.Option(help="Your merchant/branch id: duplicates are counted per reference.")
    ] = "",
    request_id: Annotated[
        str, typer.Option(help="Your request id: a retry with it is answered once.")
    ] = "",
    hub_address: HubOpt = None,
    member: MemberOpt = "",
    certs: CertsOpt = None,
    timeout: Annotated[float, typer.Option(help="Deadline in seconds.")] = 10.0,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print the answer as proto3 JSON, as the JSON API answers (a failure as "
            "Connect error JSON).",
        ),
    ] = False,
) -> None:
    """Verify a slip by its QR text, a slip image, or --bank and --ref, against expectations."""
    if sum(bool(x) for x in (qr_text, bank or ref, image)) > 1:
        raise typer.BadParameter("give one of: QR text, --image, or --bank/--ref")
    if image is not None:
        query = SlipQuery(image=image_bytes(image))
    elif qr_text:
        query = SlipQuery(qr_text=qr_text)
    elif bank and ref:
        query = SlipQuery(sending_bank=bank, trans_ref=ref)
    else:
        raise typer.BadParameter("give the slip's QR text, or both --bank and --ref")
    expect = expectations(
        amount, amount_at_least, amount_at_most, receiver, receiving_bank, since, until
    )
    hub, member, certs = resolve_target(hub_address, member, certs, default_hub=DEFAULT_HUB)
    try:
        with TxVerifyClient(hub, member=member, certs=certs, timeout=timeout) as client:
            response = client.verify(
                query, request_id=request_id, expect=expect, reference=reference
            )
    except VerifyFailed as exc:
        d = exc.details
        if as_json:  # the Connect error JSON, as the JSON API answers it
            print(json.dumps(error_json(d), ensure_ascii=False, indent=2))
        else:
            err.print(failure_line(d, hub, HUB))
        raise typer.Exit(_EXIT_BY_STATUS.get(d.status.name, EXIT_FAILED)) from None
    if as_json:
        print(json.dumps(message_json(response), ensure_ascii=False, indent=2))
    else:
        _show(response)
    raise typer.Exit(_EXIT_BY_VERDICT.get(response.verdict, EXIT_FAILED))
