"""Answers as JSON objects, with the field names of existing slip APIs and times in Bangkok.

What `txverify verify --json` prints and the console shows; an integrator's own
service can return the same shape.
"""

from __future__ import annotations

from typing import Any

from txverify import units
from txverify.v1 import common_pb2
from txverify.v1 import verification_pb2 as V

STATUS_NAMES = {
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
        "status": STATUS_NAMES.get(tx.status, "UNSPECIFIED"),
    }


def answer_dict(response: V.VerifyResponse) -> dict[str, Any]:
    dup = response.duplicate

    def stamp(when: Any, present: bool) -> str:
        return units.bangkok(units.from_timestamp(when)).isoformat() if present else ""

    return {
        "requestId": response.request_id,
        "verdict": V.Verdict.Name(response.verdict).removeprefix("VERDICT_"),
        "replayed": response.replayed,
        "checks": [
            {
                "check": V.Check.Name(c.check).removeprefix("CHECK_"),
                "outcome": V.CheckOutcome.Name(c.outcome).removeprefix("CHECK_OUTCOME_"),
                "expected": c.expected,
                "observed": c.observed,
            }
            for c in response.checks
        ],
        "duplicate": {
            "previousCount": dup.previous_count,
            "firstVerifiedAt": stamp(dup.first_verified_at, dup.HasField("first_verified_at")),
            "firstVerifiedBy": dup.first_verified_by,
            "previousCountInScope": dup.previous_count_in_scope,
            "firstVerifiedInScopeAt": stamp(
                dup.first_verified_in_scope_at, dup.HasField("first_verified_in_scope_at")
            ),
        },
        "transaction": transaction_dict(response.transaction),
    }
