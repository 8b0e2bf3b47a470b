"""End to end: a real hub forwarding to real simulated banks over loopback."""

from __future__ import annotations

from datetime import UTC
from typing import TYPE_CHECKING

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from txverify import miniqr
from txverify.errors import ErrorDetails, details_of
from txverify.hub.app import RunningHub
from txverify.simulators.bank import SlipVisibility
from txverify.simulators.ledger import LedgerTransaction, PartyRecord, TxStatus
from txverify.simulators.server import RunningSimulator
from txverify.v1 import common_pb2, verification_pb2, verification_pb2_grpc

if TYPE_CHECKING:  # the async stub type exists only in the .pyi stubs
    from typing import TypeAlias

    Stub: TypeAlias = verification_pb2_grpc.VerificationServiceAsyncStub


def _seeded(sim: RunningSimulator, code: str) -> LedgerTransaction:
    """A seeded transfer an inquiry finds: visible, completed, not a bill payment."""
    bank = sim.nodes[code].bank
    for slip in bank.list_slips(100, None):
        tx = slip.transaction
        if (
            bank.visibility(tx) is SlipVisibility.VISIBLE
            and tx.status is TxStatus.COMPLETED
            and not tx.ref1
        ):
            return tx
    raise AssertionError(f"no visible seeded slip at {code}")


async def _fail(stub: Stub, request: verification_pb2.VerifyRequest) -> ErrorDetails:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Verify(request, timeout=5)
    return details_of(caught.value)


def _expected_proxy_mask(kind: str, value: str) -> str:
    if kind == "MSISDN":
        return f"xxx-xxx-{value[-4:]}"
    if kind == "NATID":
        return f"x-xxxx-xxxx{value[9]}-{value[10:12]}-{value[12]}"
    return "x" * (len(value) - 4) + value[-4:]


def _assert_party(masked: common_pb2.Party, raw: PartyRecord) -> None:
    first_th, surname_th = raw.name_th.split()
    first_en, surname_en = raw.name_en.split()
    assert f"{first_th} {surname_th[0]}" == masked.display_name
    assert f"{first_en} {surname_en[0]}" == masked.name
    if raw.account:
        assert common_pb2.ACCOUNT_TYPE_BANKAC == masked.account.type
        assert f"xxx-x-x{raw.account[5:9]}-x" == masked.account.value
    else:
        assert not masked.HasField("account")
    if raw.proxy_kind is None:
        assert not masked.HasField("proxy")
    else:
        assert f"PROXY_TYPE_{raw.proxy_kind}" == common_pb2.ProxyType.Name(masked.proxy.type)
        assert _expected_proxy_mask(raw.proxy_kind, raw.proxy_value) == masked.proxy.value


_STATUS = {
    TxStatus.COMPLETED: common_pb2.TRANSACTION_STATUS_COMPLETED,
    TxStatus.REVERSED: common_pb2.TRANSACTION_STATUS_REVERSED,
}


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
    assert _STATUS[raw.status] == tx.status
    _assert_party(tx.sender, raw.sender)
    _assert_party(tx.receiver, raw.receiver)


async def test_verify_by_qr_returns_the_masked_transaction(
    verifier: Stub, simulator: RunningSimulator
) -> None:
    raw = _seeded(simulator, "014")
    qr = miniqr.build(raw.sending_bank, raw.trans_ref)

    response = await verifier.Verify(verification_pb2.VerifyRequest(qr_text=qr), timeout=5)

    _assert_transaction(response.transaction, raw)


async def test_verify_by_slip_ref_returns_the_masked_transaction(
    verifier: Stub, simulator: RunningSimulator
) -> None:
    raw = _seeded(simulator, "002")
    slip = common_pb2.SlipRef(sending_bank="002", trans_ref=raw.trans_ref)

    response = await verifier.Verify(verification_pb2.VerifyRequest(slip_ref=slip), timeout=5)

    _assert_transaction(response.transaction, raw)


async def test_every_seeded_slip_of_every_bank_verifies(
    verifier: Stub, simulator: RunningSimulator
) -> None:
    for node in simulator.nodes.values():
        for slip in node.bank.list_slips(1000, None):
            raw = slip.transaction
            request = verification_pb2.VerifyRequest(qr_text=slip.qr_text)
            if node.bank.visibility(raw) is SlipVisibility.EXPIRED:
                error = await _fail(verifier, request)
                assert (grpc.StatusCode.NOT_FOUND, "SLIP_EXPIRED") == (error.status, error.reason)
                continue
            response = await verifier.Verify(request, timeout=5)
            _assert_transaction(response.transaction, raw)


async def test_request_id_is_echoed_or_made(verifier: Stub, simulator: RunningSimulator) -> None:
    slip = common_pb2.SlipRef(sending_bank="002", trans_ref=_seeded(simulator, "002").trans_ref)

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
    verifier: Stub, simulator: RunningSimulator
) -> None:
    raw = _seeded(simulator, "014")
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
    verifier: Stub, simulator: RunningSimulator, request_id: str
) -> None:
    slip = common_pb2.SlipRef(sending_bank="002", trans_ref=_seeded(simulator, "002").trans_ref)

    error = await _fail(
        verifier, verification_pb2.VerifyRequest(slip_ref=slip, request_id=request_id)
    )

    assert ("INVALID_REQUEST", "request_id") == (error.reason, error.metadata["field"])


async def test_stopped_issuer_is_unavailable_issuer_unavailable(
    verifier: Stub, simulator: RunningSimulator
) -> None:
    raw = _seeded(simulator, "014")
    await simulator.nodes["014"].close()

    error = await _fail(
        verifier, verification_pb2.VerifyRequest(qr_text=miniqr.build("014", raw.trans_ref))
    )

    assert (grpc.StatusCode.UNAVAILABLE, "ISSUER_UNAVAILABLE", "8503") == (
        error.status,
        error.reason,
        error.code,
    )


async def test_other_issuers_still_answer_while_one_is_down(
    verifier: Stub, simulator: RunningSimulator
) -> None:
    await simulator.nodes["014"].close()
    raw = _seeded(simulator, "002")

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
