"""The simulated network as the field runs it: retention by bank, backdated transfers,
pending (not settled) transfers, and each bank's transRef style, through a real hub."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aiohttp
import grpc
import pytest

from conftest import CONSOLE_TOKEN
from txverify import miniqr, units
from txverify.cli.load.judge import judge_answer, judge_error
from txverify.cli.load.slips import fetch_slips
from txverify.errors import details_of
from txverify.hub.app import RunningHub
from txverify.simulators.bank import Bank, TransferOrder
from txverify.simulators.ledger import ProxyKind, ProxyRecord
from txverify.simulators.ledger_stores import open_ledger
from txverify.simulators.profiles import profile
from txverify.simulators.server import RunningSimulator, start_simulator
from txverify.simulators.settings import SimulatorSettings
from txverify.v1 import common_pb2, simulator_pb2, verification_pb2

CODES = ("002", "004", "006", "011", "014", "025", "030", "069")
PENDING_BANK, PENDING_SECONDS = "069", 1.0
# The shapes printed by real apps' slip QRs (domain.md).
SHAPES = {
    "002": r"\d{25}",
    "006": r"[A-Za-z0-9]{17,21}",
    "011": r"\d{18}",
    "025": r"(KMA|KSA)[A-Za-z0-9]{22}",
    "030": r"[A-Z0-9]{12}I[A-Z0-9]{11}",
    "069": r"(TR|RIB)[A-Za-z0-9]+",
}


@pytest.fixture
async def simulator() -> AsyncIterator[RunningSimulator]:
    settings = SimulatorSettings(
        codes=CODES, transactions=20, pending_seconds={PENDING_BANK: PENDING_SECONDS}
    )
    sim = await start_simulator(settings)
    try:
        yield sim
    finally:
        await sim.stop()


def _transfer(bank: str, when: datetime | None = None) -> simulator_pb2.TransferRequest:
    request = simulator_pb2.TransferRequest(
        bank=bank,
        to_bank="073",
        to_proxy=common_pb2.Proxy(type=common_pb2.PROXY_TYPE_MSISDN, value="0812345678"),
        amount_satang=12_345,
    )
    if when is not None:
        request.trans_time.CopyFrom(units.to_timestamp(when))
    return request


async def _verify(verifier: object, qr: str) -> verification_pb2.VerifyResponse | grpc.RpcError:
    try:
        response: verification_pb2.VerifyResponse = await verifier.Verify(  # type: ignore[attr-defined]
            verification_pb2.VerifyRequest(qr_text=qr), timeout=5
        )
        return response
    except grpc.aio.AioRpcError as error:
        return error


async def test_banks_list_their_own_retention_and_pending_window(control: object) -> None:
    listed = await control.ListBanks(simulator_pb2.ListBanksRequest(), timeout=5)  # type: ignore[attr-defined]

    shown = {b.code: (b.retention_days, b.pending_ms) for b in listed.banks}

    assert {
        "002": (30, 0),
        "004": (30, 0),
        "006": (30, 0),
        "011": (7, 0),
        "014": (7, 0),
        "025": (7, 0),
        "030": (7, 0),
        "069": (7, 1000),
    } == shown


async def test_ten_day_old_slip_is_found_at_kbank_and_expired_at_scb(
    hub: RunningHub, verifier: object, control: object
) -> None:
    ten_days_ago = datetime.now(UTC) - timedelta(days=10)
    kbank = await control.Transfer(_transfer("004", ten_days_ago), timeout=5)  # type: ignore[attr-defined]
    scb = await control.Transfer(_transfer("014", ten_days_ago), timeout=5)  # type: ignore[attr-defined]

    found = await _verify(verifier, kbank.qr_text)
    expired = await _verify(verifier, scb.qr_text)

    assert isinstance(found, verification_pb2.VerifyResponse)
    assert (verification_pb2.VERDICT_VALID, ten_days_ago.replace(microsecond=0)) == (
        found.verdict,
        units.from_timestamp(found.transaction.trans_time).replace(microsecond=0),
    )
    assert isinstance(expired, grpc.RpcError)
    d = details_of(expired)
    assert (grpc.StatusCode.NOT_FOUND, "SLIP_EXPIRED", "8404") == (d.status, d.reason, d.code)


async def test_seeded_history_has_slips_only_a_thirty_day_bank_still_answers(
    simulator: RunningSimulator,
) -> None:
    now = datetime.now(UTC)

    def ages(code: str) -> list[int]:
        bank = simulator.nodes[code].bank
        return [(now - s.transaction.trans_time).days for s in bank.list_slips(1000, None)]

    assert any(9 <= a < 30 for a in ages("004")) or any(9 <= a < 30 for a in ages("002"))
    assert max(ages("004") + ages("014")) <= 35


async def test_retention_days_overrides_every_bank() -> None:
    sim = await start_simulator(
        SimulatorSettings(codes=("004", "014"), transactions=0, retention_days=5)
    )
    try:
        assert {"004": 5, "014": 5} == {
            code: node.bank.retention_days for code, node in sim.nodes.items()
        }
    finally:
        await sim.stop()


async def test_backdated_transfer_in_the_future_is_refused(control: object) -> None:
    tomorrow = datetime.now(UTC) + timedelta(days=1)

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await control.Transfer(_transfer("004", tomorrow), timeout=5)  # type: ignore[attr-defined]

    d = details_of(raised.value)
    assert (grpc.StatusCode.INVALID_ARGUMENT, "trans_time") == (d.status, d.metadata["field"])


async def test_slip_time_option_makes_a_backdated_transfer(simulator: RunningSimulator) -> None:
    when = units.bangkok(datetime.now(UTC) - timedelta(days=12)).replace(second=0, microsecond=0)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "txverify.cli", "slip", "--control", simulator.control_address,
        "--from-bank", "004", "--to", "0812345678", "--to-bank", "014", "--amount", "1.50",
        "--time", when.strftime("%Y-%m-%dT%H:%M"), "--json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, errors = await proc.communicate()

    assert 0 == proc.returncode, errors.decode()
    made = json.loads(out)["transaction"]["transTime"]
    assert when == datetime.fromisoformat(made.replace("Z", "+00:00"))


async def test_pending_transfer_answers_slip_pending_with_retry_info_then_valid(
    hub: RunningHub, verifier: object, control: object
) -> None:
    slip = await control.Transfer(_transfer(PENDING_BANK), timeout=5)  # type: ignore[attr-defined]

    pending = await _verify(verifier, slip.qr_text)
    await asyncio.sleep(PENDING_SECONDS + 0.1)
    settled = await _verify(verifier, slip.qr_text)

    assert isinstance(pending, grpc.RpcError)
    d = details_of(pending)
    assert (grpc.StatusCode.UNAVAILABLE, "SLIP_PENDING", "8404", PENDING_BANK) == (
        d.status,
        d.reason,
        d.code,
        d.metadata["issuer"],
    )
    assert d.retry_after is not None
    assert 0 < d.retry_after <= PENDING_SECONDS
    assert isinstance(settled, verification_pb2.VerifyResponse)
    assert verification_pb2.VERDICT_VALID == settled.verdict


async def test_pending_window_set_through_the_faults_applies_to_new_transfers(
    hub: RunningHub, verifier: object, control: object
) -> None:
    await control.SetFaults(  # type: ignore[attr-defined]
        simulator_pb2.SetFaultsRequest(bank="014", faults=simulator_pb2.Faults(pending_ms=60_000)),
        timeout=5,
    )
    slip = await control.Transfer(_transfer("014"), timeout=5)  # type: ignore[attr-defined]
    listed = await control.ListTransactions(  # type: ignore[attr-defined]
        simulator_pb2.ListTransactionsRequest(bank="014", page_size=1), timeout=5
    )

    answer = await _verify(verifier, slip.qr_text)

    assert (slip.transaction.trans_ref, simulator_pb2.SLIP_STATE_PENDING) == (
        listed.slips[0].transaction.trans_ref,
        listed.slips[0].state,
    )
    assert isinstance(answer, grpc.RpcError)
    assert "SLIP_PENDING" == details_of(answer).reason
    assert 50 < (details_of(answer).retry_after or 0) <= 60


async def test_pending_circuit_stays_closed(
    hub: RunningHub, verifier: object, control: object
) -> None:
    for _ in range(6):
        slip = await control.Transfer(_transfer(PENDING_BANK), timeout=5)  # type: ignore[attr-defined]
        await _verify(verifier, slip.qr_text)

    assert "CLOSED" == hub.gateway.circuit_state(PENDING_BANK).name  # type: ignore[union-attr]


@pytest.mark.parametrize("code", sorted(SHAPES))
async def test_new_slips_follow_their_banks_reference_style_and_verify(
    hub: RunningHub, verifier: object, control: object, code: str
) -> None:
    slips = [
        await control.Transfer(_transfer(code, datetime.now(UTC) - timedelta(hours=1)), timeout=5)  # type: ignore[attr-defined]
        for _ in range(5)
    ]

    refs = [s.transaction.trans_ref for s in slips]
    answers = [await _verify(verifier, s.qr_text) for s in slips]

    assert [] == [r for r in refs if not re.fullmatch(SHAPES[code], r)]
    assert [code] * 5 == [miniqr.parse(s.qr_text).sending_bank for s in slips]
    assert [verification_pb2.VERDICT_VALID] * 5 == [getattr(a, "verdict", None) for a in answers]


def test_baac_references_start_with_mpi() -> None:
    ledger = open_ledger("sqlite://")
    try:
        bank = Bank(profile("034"), ledger)
        bank.open_account(name_th="สมชาย ใจดี", name_en="SOMCHAI JAIDEE", initial_balance=10**6)
        order = TransferOrder(
            to_proxy=ProxyRecord(ProxyKind.MSISDN, "0812345678"), to_bank="004", amount=100
        )
        refs = [bank.transfer(order) for _ in range(3)]
    finally:
        ledger.close()

    assert all(re.fullmatch(r"MPI\d{17}", r.transaction.trans_ref) for r in refs)


async def test_load_judges_pending_slips_right(
    simulator: RunningSimulator, hub: RunningHub, verifier: object, control: object
) -> None:
    await control.SetFaults(  # type: ignore[attr-defined]
        simulator_pb2.SetFaultsRequest(bank="014", faults=simulator_pb2.Faults(pending_ms=60_000)),
        timeout=5,
    )
    made = [await control.Transfer(_transfer("014"), timeout=5) for _ in range(3)]  # type: ignore[attr-defined]
    pools = await asyncio.to_thread(fetch_slips, simulator.control_address)

    answers = [await _verify(verifier, qr) for qr in pools["pending"]]
    outcomes = [f"{details_of(a).status.name}/{details_of(a).reason}" for a in answers]  # type: ignore[arg-type]

    assert sorted(s.qr_text for s in made) == sorted(pools["pending"])
    assert ["ok"] * 3 == [judge_error("pending", o) for o in outcomes]
    assert "wrong" == judge_error("pending", "NOT_FOUND/SLIP_NOT_FOUND")
    assert "wrong" == judge_error("notfound", outcomes[0])


async def test_load_accepts_a_pending_slip_that_settled_meanwhile(
    hub: RunningHub, verifier: object, control: object
) -> None:
    slip = await control.Transfer(_transfer(PENDING_BANK), timeout=5)  # type: ignore[attr-defined]
    await asyncio.sleep(PENDING_SECONDS + 0.1)
    response = await verifier.Verify(  # type: ignore[attr-defined]
        verification_pb2.VerifyRequest(qr_text=slip.qr_text, request_id="load-1"), timeout=5
    )

    judged = judge_answer("pending", response, "load-1", miniqr.parse(slip.qr_text))
    other = judge_answer("pending", response, "load-1", miniqr.parse(_other_qr()))

    assert ("", True) == (judged, other.startswith("answered about"))


def _other_qr() -> str:
    return miniqr.build(PENDING_BANK, "TR000000000000000000")


async def test_console_shows_each_banks_retention_and_pending_window_and_keeps_it(
    console_hub: RunningHub,
) -> None:
    assert console_hub.console is not None
    operator = {"X-Console-Token": CONSOLE_TOKEN}
    async with aiohttp.ClientSession(base_url=console_hub.console.url) as web:
        async with web.post(
            f"/api/banks/{PENDING_BANK}/faults", json={"latency_ms": 10}, headers=operator
        ) as response:
            assert 200 == response.status
        async with web.get("/api/state") as response:
            banks = {b["code"]: b for b in (await response.json())["banks"]}

    assert ((30, 0), (7, 0), (7, 1000)) == tuple(
        (banks[c]["retention_days"], banks[c]["pending_ms"]) for c in ("004", "014", PENDING_BANK)
    )
