"""Show a verified transaction to people: a rich table (the JSON form: txverify.client.answers)."""

from __future__ import annotations

from rich.table import Table

from txverify import units
from txverify.banks import bank_label
from txverify.client.answers import STATUS_NAMES
from txverify.v1 import common_pb2


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
        ("status", STATUS_NAMES.get(tx.status, "UNSPECIFIED")),
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
