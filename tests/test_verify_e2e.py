"""End to end: a real hub forwarding to real simulated banks over loopback."""

from __future__ import annotations

from datetime import UTC
from typing import TYPE_CHECKING

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.app import RunningHub
from simulators.ledger import LedgerTransaction, PartyRecord
from simulators.server import RunningBank
from txverify import miniqr
from txverify.errors import ErrorDetails, details_of
from txverify.v1 import common_pb2, verification_pb2, verification_pb2_grpc

if TYPE_CHECKING:  # the async stub type exists only in the .pyi stubs
    from typing import TypeAlias

    Stub: TypeAlias = verification_pb2_grpc.VerificationServiceAsyncStub


def _seeded(bank: RunningBank) -> LedgerTransaction:
    return bank.ledger.recent_transactions(1)[0]


async def _fail(stub: Stub, request: verification_pb2.VerifyRequest) -> ErrorDetails:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Verify(request, timeout=5)
    return details_of(caught.value)


def _assert_party(masked: common_pb2.Party, raw: PartyRecord) -> None:
    first_th, surname_th = raw.name_th.split()
    first_en, surname_en = raw.name_en.split()
    assert f"{first_th} {surname_th[0]}" == masked.display_name
    assert f"{first_en} {surname_en[0]}" == masked.name
    assert common_pb2.ACCOUNT_TYPE_BANKAC == masked.account.type
    assert f"xxx-x-x{raw.account[5:9]}-x" == masked.account.value
    if raw.proxy_kind is None:
        assert not masked.HasField("proxy")
    else:
        assert f"PROXY_TYPE_{raw.proxy_kind}" == common_pb2.ProxyType.Name(masked.proxy.type)
        assert f"xxx-xxx-{raw.proxy_value[-4:]}" == masked.proxy.value


def _assert_transaction(tx: common_pb2.Transaction, raw: LedgerTransaction) -> None:
    assert raw.trans_ref == tx.trans_ref
    assert raw.sending_bank == tx.sending_bank
    assert raw.receiving_bank == tx.receiving_bank
    assert raw.trans_time == tx.trans_time.ToDatetime(tzinfo=UTC)
    assert (raw.amount, "THB") == (tx.amount.satang, tx.amount.currency)
    assert (raw.amount, "THB") == (tx.paid_local_amount.satang, tx.paid_local_amount.currency)
    assert (raw.fee, "THB") == (tx.trans_fee_amount.satang, tx.trans_fee_amount.currency)
    assert (raw.ref1, raw.ref2, raw.ref3) == (tx.ref1, tx.ref2, tx.ref3)
    assert raw.to_merchant_id == tx.to_merchant_id
    assert "TH" == tx.country_code
    assert common_pb2.TRANSACTION_STATUS_COMPLETED == tx.status
    _assert_party(tx.sender, raw.sender)
    _assert_party(tx.receiver, raw.receiver)


async def test_verify_by_qr_returns_the_masked_transaction(
    verifier: Stub, banks: dict[str, RunningBank]
) -> None:
    raw = _seeded(banks["014"])
    qr = miniqr.build(raw.sending_bank, raw.trans_ref)

    response = await verifier.Verify(verification_pb2.VerifyRequest(qr_text=qr), timeout=5)

    _assert_transaction(response.transaction, raw)


async def test_verify_by_slip_ref_returns_the_masked_transaction(
    verifier: Stub, banks: dict[str, RunningBank]
) -> None:
    raw = _seeded(banks["002"])
    slip = common_pb2.SlipRef(sending_bank="002", trans_ref=raw.trans_ref)

    response = await verifier.Verify(verification_pb2.VerifyRequest(slip_ref=slip), timeout=5)

    _assert_transaction(response.transaction, raw)


async def test_every_seeded_slip_of_every_bank_verifies(
    verifier: Stub, banks: dict[str, RunningBank]
) -> None:
    for bank in banks.values():
        for raw in bank.ledger.recent_transactions(100):
            qr = miniqr.build(raw.sending_bank, raw.trans_ref)
            response = await verifier.Verify(verification_pb2.VerifyRequest(qr_text=qr), timeout=5)
            _assert_transaction(response.transaction, raw)


async def test_request_id_is_echoed_or_made(verifier: Stub, banks: dict[str, RunningBank]) -> None:
    slip = common_pb2.SlipRef(sending_bank="002", trans_ref=_seeded(banks["002"]).trans_ref)

    given = await verifier.Verify(
        verification_pb2.VerifyRequest(slip_ref=slip, request_id="merchant-42/abc"), timeout=5
    )
    made = await verifier.Verify(verification_pb2.VerifyRequest(slip_ref=slip), timeout=5)

    assert "merchant-42/abc" == given.request_id
    assert 32 == len(made.request_id)


async def test_unknown_ref_is_not_found_slip_not_found(verifier: Stub) -> None:
    qr = miniqr.build("014", "20991231014NoSuchRef")

    error = await _fail(verifier, verification_pb2.VerifyRequest(qr_text=qr))

    assert (grpc.StatusCode.NOT_FOUND, "SLIP_NOT_FOUND", "8404") == (
        error.status,
        error.reason,
        error.code,
    )


async def test_unregistered_bank_is_not_found_issuer_not_found(verifier: Stub) -> None:
    qr = miniqr.build("011", "20261127011ABCDEFGHIJ")  # TTB: a real bank, not a member here

    error = await _fail(verifier, verification_pb2.VerifyRequest(qr_text=qr))

    assert (grpc.StatusCode.NOT_FOUND, "ISSUER_NOT_FOUND", "6501") == (
        error.status,
        error.reason,
        error.code,
    )
    assert "011" == error.metadata["issuer"]


async def test_corrupted_crc_is_invalid_argument_naming_tag_91(
    verifier: Stub, banks: dict[str, RunningBank]
) -> None:
    raw = _seeded(banks["014"])
    qr = miniqr.build(raw.sending_bank, raw.trans_ref)
    corrupted = qr[:-1] + ("0" if qr[-1] != "0" else "1")

    error = await _fail(verifier, verification_pb2.VerifyRequest(qr_text=corrupted))

    assert (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_SLIP_QR", "6400") == (
        error.status,
        error.reason,
        error.code,
    )
    assert ("91", "BAD_CRC") == (error.metadata["field"], error.metadata["qr_reason"])
    assert ["qr_text[91]"] == [v.field for v in error.violations]


async def test_payment_qr_is_refused_as_not_a_slip(verifier: Stub) -> None:
    body = "00020101021129370016A000000677010111011300668123456785802TH53037646304"
    payment_qr = body + f"{miniqr.crc16_ccitt_false(body.encode()):04X}"

    error = await _fail(verifier, verification_pb2.VerifyRequest(qr_text=payment_qr))

    assert (grpc.StatusCode.INVALID_ARGUMENT, "NOT_A_SLIP_QR") == (
        error.status,
        error.metadata["qr_reason"],
    )


async def test_missing_slip_is_invalid_request(verifier: Stub) -> None:
    error = await _fail(verifier, verification_pb2.VerifyRequest())

    assert (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST", "slip") == (
        error.status,
        error.reason,
        error.metadata["field"],
    )


@pytest.mark.parametrize(
    ("bank", "ref", "field"),
    [
        ("14", "ABC123", "slip_ref.sending_bank"),
        ("014", "", "slip_ref.trans_ref"),
        ("014", "ABC-123", "slip_ref.trans_ref"),
        ("014", "A" * 33, "slip_ref.trans_ref"),
    ],
)
async def test_malformed_slip_ref_is_invalid_request_naming_the_field(
    verifier: Stub, bank: str, ref: str, field: str
) -> None:
    request = verification_pb2.VerifyRequest(
        slip_ref=common_pb2.SlipRef(sending_bank=bank, trans_ref=ref)
    )

    error = await _fail(verifier, request)

    assert (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST", field) == (
        error.status,
        error.reason,
        error.metadata["field"],
    )


@pytest.mark.parametrize("request_id", ["has space", "x" * 65, "ไทย"])
async def test_malformed_request_id_is_invalid_request(
    verifier: Stub, banks: dict[str, RunningBank], request_id: str
) -> None:
    slip = common_pb2.SlipRef(sending_bank="002", trans_ref=_seeded(banks["002"]).trans_ref)

    error = await _fail(
        verifier, verification_pb2.VerifyRequest(slip_ref=slip, request_id=request_id)
    )

    assert ("INVALID_REQUEST", "request_id") == (error.reason, error.metadata["field"])


async def test_stopped_issuer_is_unavailable_issuer_unavailable(
    verifier: Stub, banks: dict[str, RunningBank]
) -> None:
    raw = _seeded(banks["014"])
    await banks["014"].stop(grace=0)

    error = await _fail(
        verifier, verification_pb2.VerifyRequest(qr_text=miniqr.build("014", raw.trans_ref))
    )

    assert (grpc.StatusCode.UNAVAILABLE, "ISSUER_UNAVAILABLE", "8503") == (
        error.status,
        error.reason,
        error.code,
    )


async def test_other_issuers_still_answer_while_one_is_down(
    verifier: Stub, banks: dict[str, RunningBank]
) -> None:
    await banks["014"].stop(grace=0)
    raw = _seeded(banks["002"])

    response = await verifier.Verify(
        verification_pb2.VerifyRequest(qr_text=miniqr.build("002", raw.trans_ref)), timeout=5
    )

    assert raw.trans_ref == response.transaction.trans_ref


async def test_hub_health_is_serving_overall_and_for_verification(
    hub_channel: grpc.aio.Channel,
) -> None:
    health: health_pb2_grpc.HealthStub = health_pb2_grpc.HealthStub(hub_channel)
    for service in ("", "txverify.v1.VerificationService"):
        reply = await health.Check(  # type: ignore[attr-defined]
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )
        assert health_pb2.HealthCheckResponse.SERVING == reply.status


async def test_hub_health_is_not_serving_once_stopping(hub: RunningHub) -> None:
    await hub.health.enter_graceful_shutdown()

    async with grpc.aio.insecure_channel(f"127.0.0.1:{hub.port}") as channel:
        health: health_pb2_grpc.HealthStub = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(  # type: ignore[attr-defined]
            health_pb2.HealthCheckRequest(), timeout=5
        )

    assert health_pb2.HealthCheckResponse.NOT_SERVING == reply.status
