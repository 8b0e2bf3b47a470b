"""Fuzz target: whatever an issuer answers, the hub judges it without failing.

Input: one control byte, then a serialized IssuerInquiryResponse as an issuer
(perhaps a broken one) might send. The control byte picks one of EXPECTATIONS,
each valid (validate_expectations accepts it), and how many earlier uses of the
slip the audit found. The hub's checks (txverify.hub.checks.evaluate and verdict) and
the response it builds must work for any transaction: fields unset, unknown enum
values, times out of range, amounts at the int64 limits, any text.
"""

from __future__ import annotations

from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp

from txverify.hub.checks import evaluate, verdict
from txverify.v1 import common_pb2, issuer_pb2, verification_pb2

_V = verification_pb2
_INT64_MAX = 2**63 - 1


def _receiver(
    account: str = "",
    proxy: common_pb2.ProxyType.ValueType = common_pb2.PROXY_TYPE_UNSPECIFIED,
    value: str = "",
) -> _V.ReceiverExpectation:
    if account:
        return _V.ReceiverExpectation(account=account)
    return _V.ReceiverExpectation(proxy=common_pb2.Proxy(type=proxy, value=value))


EXPECTATIONS: tuple[_V.Expectations, ...] = (
    _V.Expectations(),
    _V.Expectations(amount=_V.AmountExpectation(equals_satang=150_000)),
    _V.Expectations(amount=_V.AmountExpectation(at_least_satang=0, at_most_satang=_INT64_MAX)),
    _V.Expectations(
        receivers=[
            _receiver("123-4-56789-0"),
            _receiver(proxy=common_pb2.PROXY_TYPE_MSISDN, value="+66 81 234 5678"),
            _receiver(proxy=common_pb2.PROXY_TYPE_EMAIL, value="somchai@example.com"),
            _receiver(proxy=common_pb2.PROXY_TYPE_NATID, value="1-2345-67890-12-3"),
            _receiver(proxy=common_pb2.PROXY_TYPE_ACCOUNT, value="x"),
            _receiver(proxy=common_pb2.PROXY_TYPE_EWALLETID, value="123456789012345"),
            _receiver(proxy=common_pb2.PROXY_TYPE_BILLERID, value="099400016550100"),
        ]
    ),
    _V.Expectations(receiving_bank="004"),
    _V.Expectations(
        not_before=Timestamp(seconds=-62135596800),  # 0001-01-01T00:00:00Z
        # 9999-12-31T16:59:59Z: later ones are refused, as Bangkok time is past year 9999.
        not_after=Timestamp(seconds=253402275599, nanos=999_999_999),
    ),
    _V.Expectations(not_before=Timestamp(seconds=1_768_435_200)),
    _V.Expectations(
        amount=_V.AmountExpectation(equals_satang=1, at_least_satang=1, at_most_satang=1),
        receivers=[_receiver("0"), _receiver(proxy=common_pb2.PROXY_TYPE_EMAIL, value="@")],
        receiving_bank="014",
        not_after=Timestamp(seconds=0),
    ),
)


def TestOneInput(data: bytes) -> None:
    """One fuzz input (the name atheris looks for)."""
    flags = data[0] if data else 0
    expect = EXPECTATIONS[flags % len(EXPECTATIONS)]
    try:
        answer = issuer_pb2.IssuerInquiryResponse.FromString(data[1:])
    except DecodeError:
        return  # the hub's channel refuses such bytes (the call fails, as from a down issuer)
    tx = answer.transaction
    checks = evaluate(expect, tx)
    assert len(checks) >= 1
    decided = verdict(checks, previous_uses_in_scope=flags >> 4)
    response = _V.VerifyResponse(transaction=tx, checks=checks, verdict=decided)
    _V.VerifyResponse.FromString(response.SerializeToString())
