"""Show a verified transaction: a rich table for people, a JSON object for machines."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from txverify import units
from txverify.banks import bank_label
from txverify.v1 import common_pb2

_STATUS = {
    common_pb2.TRANSACTION_STATUS_COMPLETED: "COMPLETED",
    common_pb2.TRANSACTION_STATUS_REVERSED: "REVERSED",
}


def _money(m: common_pb2.Money) -> dict[str, Any]:
    return {"satang": m.satang, "baht": units.format_baht(m.satang), "currency": m.currency}


def _party(p: common_pb2.Party) -> dict[str, Any]:
    out: dict[str, Any] = {"displayName": p.display_name, "name": p.name}
    if p.HasField("proxy"):
        out["proxy"] = {
            "type": common_pb2.ProxyType.Name(p.proxy.type).removeprefix("PROXY_TYPE_"),
            "value": p.proxy.value,
        }
    if p.HasField("account"):
        out["account"] = {
            "type": common_pb2.AccountType.Name(p.account.type).removeprefix("ACCOUNT_TYPE_"),
            "value": p.account.value,
        }
    return out


def transaction_dict(tx: common_pb2.Transaction) -> dict[str, Any]:
    """The transaction with the field names of existing slip APIs, time in Bangkok."""
    when = units.bangkok(units.from_timestamp(tx.trans_time))
    return {
        "transRef": tx.trans_ref,
        "sendingBank": tx.sending_bank,
        "receivingBank": tx.receiving_bank,
        "transDate": when.strftime("%Y%m%d"),
        "transTime": when.strftime("%H:%M:%S"),
        "transTimestamp": when.isoformat(),
        "sender": _party(tx.sender),
        "receiver": _party(tx.receiver),
        "amount": _money(tx.amount),
        "paidLocalAmount": _money(tx.paid_local_amount),
        "transFeeAmount": _money(tx.trans_fee_amount),
        "ref1": tx.ref1,
        "ref2": tx.ref2,
        "ref3": tx.ref3,
        "toMerchantId": tx.to_merchant_id,
        "countryCode": tx.country_code,
        "status": _STATUS.get(tx.status, "UNSPECIFIED"),
    }


def _party_text(p: common_pb2.Party) -> str:
    parts = [p.display_name, p.name]
    if p.HasField("account"):
        parts.append(p.account.value)
    if p.HasField("proxy"):
        kind = common_pb2.ProxyType.Name(p.proxy.type).removeprefix("PROXY_TYPE_")
        parts.append(f"{kind} {p.proxy.value}")
    return "\n".join(x for x in parts if x)


def transaction_table(tx: common_pb2.Transaction, *, title: str = "Verified transaction") -> Table:
    """A two-column table of the transaction, as a person reads a slip."""
    when = units.bangkok(units.from_timestamp(tx.trans_time))
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value")
    rows = [
        ("transRef", tx.trans_ref),
        ("status", _STATUS.get(tx.status, "UNSPECIFIED")),
        ("sending bank", bank_label(tx.sending_bank)),
        ("receiving bank", bank_label(tx.receiving_bank)),
        ("date/time (Bangkok)", when.strftime("%Y-%m-%d %H:%M:%S")),
        ("amount", f"{units.format_baht(tx.amount.satang)} {tx.amount.currency}"),
        ("fee", f"{units.format_baht(tx.trans_fee_amount.satang)} {tx.trans_fee_amount.currency}"),
        ("sender", _party_text(tx.sender)),
        ("receiver", _party_text(tx.receiver)),
    ]
    rows += [
        (k, v)
        for k, v in (
            ("ref1", tx.ref1),
            ("ref2", tx.ref2),
            ("ref3", tx.ref3),
            ("toMerchantId", tx.to_merchant_id),
        )
        if v
    ]
    for key, value in rows:
        table.add_row(key, value)
    return table
