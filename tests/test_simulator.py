"""The simulated banks through their control API, verified through a real hub."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conftest import member_channel
from txverify import miniqr
from txverify.errors import ErrorDetails, details_of
from txverify.hub.app import RunningHub
from txverify.hub.resilience.breaker import BreakerSettings
from txverify.simulators.server import RunningSimulator, start_simulator
from txverify.simulators.settings import SimulatorSettings
from txverify.v1 import common_pb2, simulator_pb2, verification_pb2, verification_pb2_grpc
from txverify.wire import issuer_health_name

if TYPE_CHECKING:
    from typing import TypeAlias

    Control: TypeAlias = "simulator_pb2_grpc.BankSimulatorAsyncStub"
    Verifier: TypeAlias = verification_pb2_grpc.VerificationServiceAsyncStub
    from txverify.v1 import simulator_pb2_grpc

MOBILE = common_pb2.Proxy(type=common_pb2.PROXY_TYPE_MSISDN, value="0812345678")


async def _error(call: object) -> ErrorDetails:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return details_of(caught.value)


async def _transfer(
    control: Control, bank: str = "014", **fields: Any
) -> simulator_pb2.TransferResponse:
    request = simulator_pb2.TransferRequest(bank=bank, to_bank="011", amount_satang=15_000)
    request.to_proxy.CopyFrom(MOBILE)
    for key, value in fields.items():
        setattr(request, key, value)
    response: simulator_pb2.TransferResponse = await control.Transfer(request, timeout=5)
    return response


async def _verify(
    verifier: Verifier, qr: str, deadline: float = 5
) -> verification_pb2.VerifyResponse:
    response: verification_pb2.VerifyResponse = await verifier.Verify(
        verification_pb2.VerifyRequest(qr_text=qr), timeout=deadline
    )
    return response


async def _set_faults(
    control: Control, bank: str, **faults: Any
) -> simulator_pb2.SetFaultsResponse:
    response: simulator_pb2.SetFaultsResponse = await control.SetFaults(
        simulator_pb2.SetFaultsRequest(bank=bank, faults=simulator_pb2.Faults(**faults)), timeout=5
    )
    return response


async def test_transfer_issues_a_slip_the_hub_verifies(
    control: Control, verifier: Verifier
) -> None:
    slip = await _transfer(control, amount_satang=15_050, fee_satang=500)

    verified = await _verify(verifier, slip.qr_text)

    assert slip.transaction == verified.transaction
    tx = verified.transaction
    assert (15_050, 500, "014", "011") == (
        tx.amount.satang,
        tx.trans_fee_amount.satang,
        tx.sending_bank,
        tx.receiving_bank,
    )
    assert "xxx-xxx-5678" == tx.receiver.proxy.value
    assert ("014", tx.trans_ref) == (
        miniqr.parse(slip.qr_text).sending_bank,
        miniqr.parse(slip.qr_text).trans_ref,
    )


async def test_transfer_debits_the_sender_and_credits_a_local_receiver(control: Control) -> None:
    opened = await control.OpenAccount(
        simulator_pb2.OpenAccountRequest(
            bank="014",
            name_th="สมหญิง ใจงาม",
            name_en="Somying Jaingam",
            initial_balance_satang=100_000,
        ),
        timeout=5,
    )
    receiver = await control.OpenAccount(
        simulator_pb2.OpenAccountRequest(
            bank="014", name_th="สมศักดิ์ ดีมาก", name_en="Somsak Deemak", proxies=[MOBILE]
        ),
        timeout=5,
    )

    slip = await _transfer(
        control,
        from_account=opened.account.account_number,
        to_bank="014",
        amount_satang=40_000,
        fee_satang=1_000,
    )

    assert 59_000 == slip.balance_satang
    assert "SOMSAK D" == slip.transaction.receiver.name
    assert (
        f"xxx-x-x{receiver.account.account_number[5:9]}-x"
        == slip.transaction.receiver.account.value
    )


async def test_transfer_beyond_the_balance_is_failed_precondition(control: Control) -> None:
    opened = await control.OpenAccount(
        simulator_pb2.OpenAccountRequest(
            bank="002", name_th="นิดา ศรีสวัสดิ์", name_en="Nida Srisawat", initial_balance_satang=1_000
        ),
        timeout=5,
    )

    error = await _error(
        _transfer(
            control, bank="002", from_account=opened.account.account_number, amount_satang=1_001
        )
    )

    assert (grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS") == (
        error.status,
        error.reason,
    )


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"amount_satang": 0}, "amount_satang"),
        ({"amount_satang": -5}, "amount_satang"),
        ({"fee_satang": -1}, "fee_satang"),
        ({"to_bank": "01"}, "to_bank"),
        ({"ref1": "has space"}, "ref1"),
    ],
)
async def test_bad_transfer_fields_are_invalid_argument_naming_the_field(
    control: Control, fields: dict[str, Any], field: str
) -> None:
    error = await _error(_transfer(control, **fields))

    assert (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST", field) == (
        error.status,
        error.reason,
        error.metadata["field"],
    )


async def test_bad_proxy_is_invalid_argument(control: Control) -> None:
    request = simulator_pb2.TransferRequest(bank="014", amount_satang=100)
    request.to_proxy.CopyFrom(
        common_pb2.Proxy(type=common_pb2.PROXY_TYPE_NATID, value="1234567890123")
    )

    error = await _error(control.Transfer(request, timeout=5))

    assert ("INVALID_REQUEST", "to_proxy") == (error.reason, error.metadata["field"])


async def test_unknown_bank_is_not_found(control: Control) -> None:
    error = await _error(control.GetFaults(simulator_pb2.GetFaultsRequest(bank="011"), timeout=5))

    assert (grpc.StatusCode.NOT_FOUND, "UNKNOWN_BANK") == (error.status, error.reason)


async def test_reversed_transfer_still_verifies_as_reversed(
    control: Control, verifier: Verifier
) -> None:
    slip = await _transfer(control)

    await control.Reverse(
        simulator_pb2.ReverseRequest(bank="014", trans_ref=slip.transaction.trans_ref), timeout=5
    )
    again = await _error(
        control.Reverse(
            simulator_pb2.ReverseRequest(bank="014", trans_ref=slip.transaction.trans_ref),
            timeout=5,
        )
    )
    verified = await _verify(verifier, slip.qr_text)

    assert common_pb2.TRANSACTION_STATUS_REVERSED == verified.transaction.status
    assert (grpc.StatusCode.FAILED_PRECONDITION, "ALREADY_REVERSED") == (again.status, again.reason)


async def test_list_transactions_pages_through_every_slip_once(
    control: Control, simulator: RunningSimulator
) -> None:
    seen: list[str] = []
    token = ""
    while True:
        page = await control.ListTransactions(
            simulator_pb2.ListTransactionsRequest(bank="002", page_size=7, page_token=token),
            timeout=5,
        )
        seen += [s.transaction.trans_ref for s in page.slips]
        token = page.next_page_token
        if not token:
            break

    assert simulator.nodes["002"].bank.ledger.count_transactions() == len(seen)
    assert len(seen) == len(set(seen))


async def test_visibility_delay_hides_a_new_slip_until_it_passes(
    control: Control, verifier: Verifier
) -> None:
    await _set_faults(control, "014", visibility_delay_ms=600)
    slip = await _transfer(control)

    early = await _error(_verify(verifier, slip.qr_text))
    await asyncio.sleep(0.7)
    late = await _verify(verifier, slip.qr_text)

    assert (grpc.StatusCode.NOT_FOUND, "SLIP_NOT_FOUND") == (early.status, early.reason)
    assert slip.transaction.trans_ref == late.transaction.trans_ref


async def test_latency_fault_delays_inquiries(control: Control, verifier: Verifier) -> None:
    slip = await _transfer(control)
    await _set_faults(control, "014", latency_ms=300)

    started = time.perf_counter()
    await _verify(verifier, slip.qr_text)
    elapsed = time.perf_counter() - started

    assert elapsed >= 0.3


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        ("UNAVAILABLE", "ISSUER_UNAVAILABLE"),
        ("INTERNAL", "ISSUER_ERROR"),
        ("RESOURCE_EXHAUSTED", "ISSUER_ERROR"),
    ],
)
async def test_error_fault_reaches_the_requester_as_an_issuer_failure(
    control: Control, verifier: Verifier, status: str, reason: str
) -> None:
    slip = await _transfer(control)
    await _set_faults(control, "014", error_rate=1.0, error_status=status)

    error = await _error(_verify(verifier, slip.qr_text))

    assert (grpc.StatusCode.UNAVAILABLE, reason) == (error.status, error.reason)


async def test_error_rate_fails_about_that_share_of_inquiries(
    control: Control, hub_factory: Callable[..., Awaitable[RunningHub]]
) -> None:
    # A circuit that never opens, so every inquiry reaches the bank.
    hub = await hub_factory(breaker=BreakerSettings(failure_threshold=100_000))
    slip = await _transfer(control)
    await _set_faults(control, "014", error_rate=0.5)
    channel = member_channel(hub.port)
    verifier = verification_pb2_grpc.VerificationServiceStub(channel)

    outcomes = []
    for _ in range(200):
        try:
            await _verify(verifier, slip.qr_text)
            outcomes.append(True)
        except grpc.aio.AioRpcError:
            outcomes.append(False)

    await channel.close()
    assert 60 <= outcomes.count(False) <= 140  # binomial(200, 0.5): outside is < 1e-8


async def test_refuse_closes_the_issuer_port_until_cleared(
    control: Control, verifier: Verifier, simulator: RunningSimulator
) -> None:
    slip = await _transfer(control)
    set_reply = await _set_faults(control, "014", refuse=True)

    refused = await _error(_verify(verifier, slip.qr_text))
    async with grpc.aio.insecure_channel(simulator.control_address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        state = await health.Check(  # type: ignore[attr-defined]
            health_pb2.HealthCheckRequest(service=issuer_health_name("014")), timeout=5
        )
    direct = await _error(_direct_inquiry(simulator, "014"))
    cleared = await _set_faults(control, "014")
    answer = await _verify_eventually(verifier, slip.qr_text)

    assert not set_reply.issuer_listening
    assert (grpc.StatusCode.UNAVAILABLE, "ISSUER_UNAVAILABLE") == (refused.status, refused.reason)
    assert health_pb2.HealthCheckResponse.NOT_SERVING == state.status
    assert grpc.StatusCode.UNAVAILABLE == direct.status
    assert cleared.issuer_listening
    assert slip.transaction.trans_ref == answer.transaction.trans_ref


async def _direct_inquiry(simulator: RunningSimulator, code: str) -> None:
    from txverify.v1 import issuer_pb2, issuer_pb2_grpc

    async with grpc.aio.insecure_channel(simulator.nodes[code].address) as channel:
        await issuer_pb2_grpc.IssuerServiceStub(channel).IssuerInquiry(
            issuer_pb2.IssuerInquiryRequest(
                slip_ref=common_pb2.SlipRef(sending_bank=code, trans_ref="X")
            ),
            timeout=2,
        )


async def _verify_eventually(
    verifier: Verifier, qr: str, within: float = 10
) -> verification_pb2.VerifyResponse:
    """The hub's channel reconnects with backoff after an outage: retry, bounded in time."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await _verify(verifier, qr)
        except grpc.aio.AioRpcError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def test_flapping_opens_and_closes_the_issuer_port(control: Control) -> None:
    await _set_faults(control, "014", flap_down_s=1, flap_period_s=2)

    states = set()
    deadline = time.monotonic() + 3.5
    while time.monotonic() < deadline:
        reply = await control.GetFaults(simulator_pb2.GetFaultsRequest(bank="014"), timeout=5)
        states.add(reply.issuer_listening)
        await asyncio.sleep(0.1)
    await _set_faults(control, "014")

    assert {True, False} == states


@pytest.mark.parametrize(
    ("faults", "field"),
    [
        ({"error_rate": 1.5}, "faults.error_rate"),
        ({"error_status": "NOPE"}, "faults.error_status"),
        ({"error_status": "OK"}, "faults.error_status"),
        ({"flap_down_s": 5, "flap_period_s": 5}, "faults.flap_period_s"),
    ],
)
async def test_bad_faults_are_invalid_argument(
    control: Control, faults: dict[str, Any], field: str
) -> None:
    error = await _error(_set_faults(control, "014", **faults))

    assert ("INVALID_REQUEST", field) == (error.reason, error.metadata["field"])


async def test_hanging_issuer_times_out_as_issuer_timeout(
    control: Control, hub_factory: Callable[..., Awaitable[RunningHub]]
) -> None:
    slow_hub = await hub_factory(issuer_timeout=0.5)
    slip = await _transfer(control)
    await _set_faults(control, "014", hang=True)

    async with member_channel(slow_hub.port) as channel:
        stub = verification_pb2_grpc.VerificationServiceStub(channel)
        started = time.perf_counter()
        error = await _error(_verify(stub, slip.qr_text, deadline=5))
        elapsed = time.perf_counter() - started

    assert (grpc.StatusCode.DEADLINE_EXCEEDED, "ISSUER_TIMEOUT", "8503") == (
        error.status,
        error.reason,
        error.code,
    )
    assert 0.5 <= elapsed < 2.0


async def test_ledgers_in_a_data_dir_survive_a_restart(tmp_path: Path) -> None:
    settings = SimulatorSettings(codes=("014",), data_dir=tmp_path, transactions=30)
    first = await start_simulator(settings)
    try:
        async with grpc.aio.insecure_channel(first.control_address) as channel:
            from txverify.v1 import simulator_pb2_grpc

            slip = await _transfer(simulator_pb2_grpc.BankSimulatorStub(channel))
    finally:
        await first.stop()

    second = await start_simulator(settings)
    try:
        bank = second.nodes["014"].bank
        kept = bank.ledger.get_transaction(slip.transaction.trans_ref)
        count = bank.ledger.count_transactions()
    finally:
        await second.stop()

    assert kept is not None
    assert 15_000 == kept.amount
    assert 31 == count  # seeded once, not again, plus the transfer
    assert (tmp_path / "bank-014.sqlite").exists()


# --- where the banks may listen -----------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "banks.example"])
def test_banks_without_tls_refuse_to_listen_beyond_loopback(host: str) -> None:
    # Without TLS the issuer ports and the control API (transfers, every slip) have
    # no authentication at all: as the hub in dev mode, loopback only.
    with pytest.raises(ValueError, match="loopback only") as caught:
        SimulatorSettings(codes=("014",), host=host)

    assert "--tls" in str(caught.value)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1"])
def test_banks_without_tls_may_listen_on_loopback(host: str) -> None:
    assert host == SimulatorSettings(codes=("014",), host=host).host


def test_banks_with_tls_may_listen_beyond_loopback(tmp_path: Path) -> None:
    assert "0.0.0.0" == SimulatorSettings(codes=("014",), host="0.0.0.0", pki=tmp_path).host
