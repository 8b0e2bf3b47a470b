"""UsageService (M15 item 4): a member reads its own usage and what is left; operators any.

Counted from the audit (every admitted Verify, by requester, Bangkok days and
months), with the live rate-limit bucket's tokens; over gRPC, the JSON API, the
client library and `txverify usage`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from typer.testing import CliRunner

from conftest import member_channel
from test_not_found_cost import found_slips, made_up, outcome
from txverify.cli.cli import app
from txverify.client import AsyncTxVerifyClient
from txverify.errors import details_of
from txverify.hub.app import RunningHub
from txverify.hub.audit import AuditEntry, AuditStore, BatchItem, MemberUsage
from txverify.hub.audit.postgres import PostgresAuditStore
from txverify.hub.audit.sqlite import SqliteAuditStore
from txverify.hub.resilience.ratelimit import RateLimit
from txverify.hub.usage import periods
from txverify.runtime import tls
from txverify.simulators.server import RunningSimulator
from txverify.units import BANGKOK
from txverify.v1 import usage_pb2, usage_pb2_grpc

HubFactory = Callable[..., Awaitable[RunningHub]]
LIMIT = RateLimit(rate=0.01, burst=100)  # nothing refills during a test (1 token / 100 s)


async def get_usage(port: int, caller: str, member: str = "") -> usage_pb2.GetUsageResponse:
    async with member_channel(port, caller) as channel:
        stub: Any = usage_pb2_grpc.UsageServiceStub(channel)
        reply: usage_pb2.GetUsageResponse = await stub.GetUsage(
            usage_pb2.GetUsageRequest(member=member), timeout=5
        )
        return reply


async def refusal(port: int, caller: str, member: str = "") -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await get_usage(port, caller, member)
    details = details_of(caught.value)
    return details.status, details.reason


@pytest.fixture
async def used(hub_factory: HubFactory, simulator: RunningSimulator) -> RunningHub:
    """A hub where 002 verified 3 real slips and 2 made-up ones, and 014 one real slip."""
    hub = await hub_factory(rate_limit=LIMIT, not_found_cost=10, json_port=0)
    slips = found_slips(simulator, 4)
    for ref in slips[:3]:
        assert "OK" == await outcome(hub.port, ref, member="002")
    for n in range(2):
        assert "SLIP_NOT_FOUND" == await outcome(hub.port, made_up(n), member="002")
    assert "OK" == await outcome(hub.port, slips[3], member="014")
    return hub


# --- gRPC -------------------------------------------------------------------------------


async def test_a_member_reads_its_own_usage_and_what_is_left(used: RunningHub) -> None:
    reply = await get_usage(used.port, "002")

    assert "002" == reply.member
    assert (5, 2) == (reply.today.verifications, reply.today.not_found)
    assert 0.4 == pytest.approx(reply.today.not_found_ratio)
    assert (5, 2) == (reply.this_month.verifications, reply.this_month.not_found)
    assert (0.01, 100, 10) == (reply.rate_limit.rate, reply.rate_limit.burst, reply.not_found_cost)
    # 100 - 5 calls - 2 * 9 extra for the not-founds (+ at most a second's refill)
    assert 77.0 == pytest.approx(reply.tokens, abs=0.1)


async def test_the_day_and_month_are_bangkok_calendar_ones(used: RunningHub) -> None:
    reply = await get_usage(used.port, "002")

    day = reply.day_start.ToDatetime(tzinfo=UTC).astimezone(BANGKOK)
    month = reply.month_start.ToDatetime(tzinfo=UTC).astimezone(BANGKOK)

    assert (0, 0, 1) == (day.hour, day.minute, month.day)
    assert datetime.now(BANGKOK).date() == day.date()
    assert (day.year, day.month) == (month.year, month.month)


async def test_an_operator_reads_any_members_usage(used: RunningHub) -> None:
    reply = await get_usage(used.port, tls.OPERATOR, "014")

    assert ("014", 1, 0) == (reply.member, reply.today.verifications, reply.today.not_found)
    assert 0.0 == reply.today.not_found_ratio


async def test_a_member_cannot_read_another_members_usage(used: RunningHub) -> None:
    assert (grpc.StatusCode.PERMISSION_DENIED, "NOT_OPERATOR") == await refusal(
        used.port, "002", "014"
    )


@pytest.mark.parametrize(
    ("caller", "member", "expected"),
    [
        ("999", "", (grpc.StatusCode.UNAUTHENTICATED, "UNKNOWN_MEMBER")),
        (tls.OPERATOR, "", (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST")),
        ("002", "2", (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST")),
    ],
)
async def test_bad_usage_requests_are_refused_with_their_reason(
    hub: RunningHub, caller: str, member: str, expected: tuple[grpc.StatusCode, str]
) -> None:
    assert expected == await refusal(hub.port, caller, member)


async def test_a_member_without_a_limit_has_no_rate_and_no_tokens(hub: RunningHub) -> None:
    reply = await get_usage(hub.port, "014")

    assert (0.0, 0, 0.0, 0) == (
        reply.rate_limit.rate,
        reply.rate_limit.burst,
        reply.tokens,
        reply.today.verifications,
    )


async def test_the_client_library_reads_usage(used: RunningHub) -> None:
    async with AsyncTxVerifyClient(f"127.0.0.1:{used.port}", member="002") as client:
        reply = await client.usage()

    assert (5, 2) == (reply.today.verifications, reply.today.not_found)


# --- the JSON API -----------------------------------------------------------------------


async def test_usage_over_the_json_api(used: RunningHub) -> None:
    assert used.json_api is not None
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{used.json_api.port}") as http:
        own = await http.post(
            "/txverify.v1.UsageService/GetUsage",
            json={},
            headers={"x-member-id": "002"},
        )
        other = await http.post(
            "/txverify.v1.UsageService/GetUsage",
            json={"member": "014"},
            headers={"x-member-id": "002"},
        )

    body = own.json()
    assert 200 == own.status_code
    assert ("002", {"verifications": "5", "notFound": "2", "notFoundRatio": 0.4}) == (
        body["member"],
        body["today"],
    )
    assert {"rate": 0.01, "burst": 100} == body["rateLimit"]
    assert 10 == body["notFoundCost"]
    assert (403, "permission_denied") == (other.status_code, other.json()["code"])


# --- `txverify usage` -------------------------------------------------------------------


@pytest.fixture
def no_network_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No network `txverify up` recorded: the command uses only what it is given."""
    monkeypatch.setenv("TXVERIFY_NETWORK", str(tmp_path / "none.json"))
    monkeypatch.delenv("TXVERIFY_MEMBER", raising=False)


async def cli(*args: str) -> Any:
    # In a thread: the command's blocking gRPC call must leave the hub's loop running.
    return await asyncio.to_thread(CliRunner().invoke, app, list(args))


@pytest.mark.usefixtures("no_network_file")
async def test_txverify_usage_json_prints_the_usage_as_proto3_json(used: RunningHub) -> None:
    result = await cli("usage", "--hub", f"127.0.0.1:{used.port}", "--as", "002", "--json")

    assert 0 == result.exit_code, result.output
    body = json.loads(result.stdout)
    assert ("002", "5", "2") == (
        body["member"],
        body["thisMonth"]["verifications"],
        body["thisMonth"]["notFound"],
    )


@pytest.mark.usefixtures("no_network_file")
async def test_txverify_usage_member_reads_it_as_operator(used: RunningHub) -> None:
    result = await cli("usage", "--hub", f"127.0.0.1:{used.port}", "--member", "002")

    assert 0 == result.exit_code, result.output
    assert "Usage of member 002" in result.stdout
    assert "40.0%" in result.stdout  # the not-found ratio


@pytest.mark.usefixtures("no_network_file")
async def test_txverify_usage_of_another_member_fails_in_one_line(used: RunningHub) -> None:
    result = await cli("usage", "--hub", f"127.0.0.1:{used.port}", "--as", "002", "--member", "014")

    assert 1 == result.exit_code
    assert "NOT_OPERATOR" in result.stderr


# --- the count, on every audit backend ---------------------------------------------------


def test_periods_are_the_bangkok_day_and_month() -> None:
    # 18:30 UTC on 30 Nov is 01:30 on 1 Dec in Bangkok.
    month, day = periods(datetime(2026, 11, 30, 18, 30, tzinfo=UTC))

    expected = datetime(2026, 12, 1, tzinfo=BANGKOK)
    assert (expected, expected) == (month, day)


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AuditStore]:
    made: AuditStore
    if request.param == "sqlite":
        made = SqliteAuditStore(f"sqlite:///{tmp_path}/hub.sqlite")
    else:
        made = PostgresAuditStore(request.getfixturevalue("postgres_url"))
    try:
        yield made
    finally:
        await made.aclose()


def entry(at: datetime, requester: str, reason: str = "") -> AuditEntry:
    return AuditEntry(
        at=at,
        request_id=f"r{at.timestamp()}{requester}{reason}",
        requester=requester,
        requester_reference="",
        issuer="014",
        trans_ref="20260101014ABCDEFGHIJ",
        status="NOT_FOUND" if reason else "OK",
        reason=reason,
    )


async def test_usage_counts_a_requesters_records_by_day_and_month(store: AuditStore) -> None:
    month = datetime(2026, 12, 1, tzinfo=BANGKOK)
    day = datetime(2026, 12, 15, tzinfo=BANGKOK)
    rows = [
        entry(month - timedelta(microseconds=1), "002"),  # last month
        entry(month, "002", "SLIP_NOT_FOUND"),
        entry(day - timedelta(hours=1), "002", "SLIP_EXPIRED"),  # not a miss
        entry(day, "002"),
        entry(day + timedelta(hours=5), "002", "SLIP_NOT_FOUND"),
        entry(day + timedelta(hours=5), "014", "SLIP_NOT_FOUND"),  # another member
    ]
    await asyncio.to_thread(store.write_batch, [BatchItem(r) for r in rows])

    used = await store.ausage("002", month, day)

    assert MemberUsage(month=4, month_not_found=2, today=2, today_not_found=1) == used


# --- the console ------------------------------------------------------------------------


async def test_the_console_shows_each_members_calls_today_and_not_found_ratio(
    console_hub: RunningHub, simulator: RunningSimulator
) -> None:
    for n in range(3):
        await outcome(console_hub.port, made_up(n), member="002")
    await outcome(console_hub.port, found_slips(simulator, 1)[0], member="002")
    assert console_hub.console is not None

    members = {m["code"]: m for m in (await console_hub.console.snapshot())["members"]}

    assert (4, 0.75) == (members["002"]["today"], members["002"]["not_found_ratio"])
    assert (0, 0.0) == (members["014"]["today"], members["014"]["not_found_ratio"])
