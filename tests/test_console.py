"""The web console over HTTP: a real hub with simulated banks, the console on loopback
port 0, and aiohttp's client as the browser (tests/test_console_browser.py drives a
real browser)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from conftest import CONSOLE_TOKEN as TOKEN
from conftest import HubFactory, personal_data
from txverify.hub.app import RunningHub
from txverify.hub.console.feed import LiveFeed, mask_reference, percentile
from txverify.hub.console.web import TOKEN_HEADER
from txverify.hub.outcome import Verification
from txverify.hub.registry import MemberStatus
from txverify.hub.settings import ConsoleSettings
from txverify.simulators.server import RunningSimulator
from txverify.slipimage import render_slip_png
from txverify.v1 import simulator_pb2, simulator_pb2_grpc

OPERATOR = {TOKEN_HEADER: TOKEN}


@pytest.fixture
async def web(console_hub: RunningHub) -> AsyncIterator[aiohttp.ClientSession]:
    assert console_hub.console is not None
    async with aiohttp.ClientSession(base_url=console_hub.console.url) as session:
        yield session


async def slips(
    control: simulator_pb2_grpc.BankSimulatorAsyncStub, bank: str
) -> list[simulator_pb2.Slip]:
    page = await control.ListTransactions(
        simulator_pb2.ListTransactionsRequest(bank=bank, page_size=50)
    )
    return [s for s in page.slips if s.state == simulator_pb2.SLIP_STATE_VISIBLE]


async def state(web: aiohttp.ClientSession, **headers: str) -> dict[str, Any]:
    async with web.get("/api/state", headers=headers) as response:
        assert 200 == response.status
        body: dict[str, Any] = await response.json()
        return body


def refused(answer: dict[str, Any]) -> tuple[bool, str]:
    """ok, and the ErrorInfo reason of a refusal (Connect error JSON, as the JSON API's)."""
    details = answer.get("error", {}).get("details", []) if not answer["ok"] else []
    infos = [d["debug"]["reason"] for d in details if d["type"] == "google.rpc.ErrorInfo"]
    return answer["ok"], infos[0] if infos else ""


async def verify_form(web: aiohttp.ClientSession, member: str, **fields: Any) -> Any:
    form = aiohttp.FormData()
    form.add_field("member", member)
    for name, value in fields.items():
        if isinstance(value, bytes):
            form.add_field(name, value, filename="slip.png", content_type="image/png")
        else:
            form.add_field(name, value)
    async with web.post("/api/verify", data=form, headers=OPERATOR) as response:
        return response.status, await response.json()


# --- the page and the read-only views ------------------------------------------------------


async def test_the_page_and_its_assets_are_served_with_no_outside_source(
    web: aiohttp.ClientSession,
) -> None:
    async with web.get("/") as response:
        assert 200 == response.status
        page = await response.text()
        policy = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy
    assert "/static/console.js" in page
    assert "/static/console.css" in page
    for asset in ("/static/console.js", "/static/console.css"):
        async with web.get(asset) as response:
            assert 200 == response.status
            text = await response.text()
        assert "http://" not in text
        assert "https://" not in text
    assert "http://" not in page
    assert "https://" not in page


async def test_members_match_the_registry(
    web: aiohttp.ClientSession, console_hub: RunningHub
) -> None:
    shown = {m["code"]: m for m in (await state(web))["members"]}
    registry = {m.code: m for m in console_hub.membership.directory.all()}
    assert set(registry) == set(shown)
    for code, member in registry.items():
        assert member.name == shown[code]["name"]
        assert member.status.value == shown[code]["status"]
        assert sorted({s.role.value for s in member.subscriptions}) == shown[code]["roles"]
        assert "CLOSED" == shown[code]["circuit"]


async def test_a_verification_shows_in_the_latest_list_and_the_rates_masked(
    web: aiohttp.ClientSession,
    console_hub: RunningHub,
    control: simulator_pb2_grpc.BankSimulatorAsyncStub,
    simulator: RunningSimulator,
) -> None:
    slip = (await slips(control, "014"))[0]
    status, answer = await verify_form(web, "002", qr_text=slip.qr_text)
    assert (200, True, "VERDICT_VALID") == (status, answer["ok"], answer["answer"]["verdict"])
    await asyncio.sleep(1.1)  # the second it fell in is complete
    shown = await state(web)
    latest = shown["recent"][0]
    assert ("002", "014", "OK", "VALID") == (
        latest["requester"], latest["issuer"], latest["status"], latest["verdict"],
    )  # fmt: skip
    assert mask_reference(slip.transaction.trans_ref) == latest["trans_ref"]
    assert slip.transaction.trans_ref not in json.dumps(shown)
    assert 1 == sum(shown["rates"]["issuers"]["014"]["rate"])
    assert latest["at"].endswith("+07:00")
    # Nothing personal in what the console serves: the answer's names are masked
    # by the bank, and the views carry no names at all.
    page = json.dumps(shown, ensure_ascii=False) + json.dumps(answer, ensure_ascii=False)
    assert not {p for p in personal_data(simulator) if p in page}


async def test_the_event_stream_sends_the_state_every_second(web: aiohttp.ClientSession) -> None:
    events: list[dict[str, Any]] = []
    async with web.get("/api/events") as response:
        assert "text/event-stream" == response.content_type
        started = asyncio.get_running_loop().time()
        while len(events) < 2:
            line = (await asyncio.wait_for(response.content.readline(), 5)).decode()
            if line.startswith("data: "):
                events.append(json.loads(line[len("data: ") :]))
        took = asyncio.get_running_loop().time() - started
    assert 0.8 < took < 3.0
    assert {"at", "hub", "members", "banks", "rates", "recent"} <= set(events[1])


# --- access -------------------------------------------------------------------------------


async def test_actions_need_the_operator_token(
    web: aiohttp.ClientSession, console_hub: RunningHub
) -> None:
    for headers in ({}, {TOKEN_HEADER: "wrong"}):
        async with web.post(
            "/api/members/014/status", json={"status": "SUSPENDED"}, headers=headers
        ) as response:
            assert 403 == response.status
            assert "NOT_OPERATOR" == (await response.json())["reason"]
    async with web.post("/api/login", json={"token": "wrong"}) as response:
        assert 403 == response.status
    async with web.post("/api/login", json={"token": TOKEN}) as response:
        assert {"operator": True} == await response.json()
    assert MemberStatus.ACTIVE == console_hub.membership.directory.get("014").status  # type: ignore[union-attr]
    assert (await state(web, **OPERATOR))["operator"]
    assert not (await state(web))["operator"]


async def test_requests_naming_another_host_are_refused(web: aiohttp.ClientSession) -> None:
    """A page on another site that rebinds its name to 127.0.0.1 cannot read the console."""
    async with web.get("/api/state", headers={"Host": "attacker.example:80"}) as response:
        assert 421 == response.status


# --- actions ------------------------------------------------------------------------------


async def test_suspend_and_resume_go_through_the_registry_as_the_operator(
    web: aiohttp.ClientSession, console_hub: RunningHub
) -> None:
    async with web.post(
        "/api/members/014/status",
        json={"status": "SUSPENDED", "reason": "QA drill"},
        headers=OPERATOR,
    ) as response:
        assert 200 == response.status
        assert "SUSPENDED" == (await response.json())["member"]["status"]
    assert "SUSPENDED" == {m["code"]: m for m in (await state(web))["members"]}["014"]["status"]
    async with web.post(
        "/api/members/014/status", json={"status": "ACTIVE"}, headers=OPERATOR
    ) as response:
        assert 200 == response.status
    changes = [(c.actor, c.action, c.details) for c in console_hub.membership.history("014")]
    assert [("operator", "STATUS"), ("operator", "STATUS")] == [c[:2] for c in changes[-2:]]
    assert "QA drill" in changes[-2][2]
    async with web.post(
        "/api/members/999/status", json={"status": "SUSPENDED"}, headers=OPERATOR
    ) as response:
        assert 404 == response.status
        assert "MEMBER_NOT_FOUND" == (await response.json())["reason"]


async def test_hang_fault_opens_the_circuit_shown_in_the_console(
    web: aiohttp.ClientSession,
    control: simulator_pb2_grpc.BankSimulatorAsyncStub,
) -> None:
    async with web.post("/api/banks/014/faults", json={"hang": True}, headers=OPERATOR) as response:
        assert 200 == response.status
        assert (await response.json())["faults"]["hang"]
    faults = await control.GetFaults(simulator_pb2.GetFaultsRequest(bank="014"))
    assert faults.faults.hang
    shown = {b["code"]: b for b in (await state(web))["banks"]}
    assert shown["014"]["faults"]["hang"]
    qrs = [s.qr_text for s in await slips(control, "014")][:3]
    for qr in qrs:  # three timeouts open the circuit (failures=3)
        status, answer = await verify_form(web, "002", qr_text=qr)
        assert (200, (False, "ISSUER_TIMEOUT")) == (status, refused(answer))
    members = {m["code"]: m for m in (await state(web))["members"]}
    assert "OPEN" == members["014"]["circuit"]
    async with web.post("/api/banks/014/faults", json={}, headers=OPERATOR) as response:
        assert not (await response.json())["faults"]["hang"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"latency_ms": -1}, "latency_ms"),
        ({"latency_ms": "100"}, "latency_ms"),
        ({"error_rate": 1.5}, "error_rate"),
        ({"hang": "yes"}, "hang"),
        ({"flap_down_s": 1}, "unknown fault fields: flap_down_s"),
    ],
)
async def test_bad_fault_settings_are_refused_and_change_nothing(
    web: aiohttp.ClientSession,
    control: simulator_pb2_grpc.BankSimulatorAsyncStub,
    body: dict[str, Any],
    fragment: str,
) -> None:
    async with web.post("/api/banks/014/faults", json=body, headers=OPERATOR) as response:
        assert 400 == response.status
        assert fragment in (await response.json())["error"]
    faults = await control.GetFaults(simulator_pb2.GetFaultsRequest(bank="014"))
    assert (0, 0.0, False, False) == (
        faults.faults.latency_ms,
        faults.faults.error_rate,
        faults.faults.hang,
        faults.faults.refuse,
    )


async def test_an_uploaded_slip_image_verifies(
    web: aiohttp.ClientSession, control: simulator_pb2_grpc.BankSimulatorAsyncStub
) -> None:
    slip = (await slips(control, "900"))[0]
    png = render_slip_png(slip.transaction, slip.qr_text)
    status, answer = await verify_form(web, "014", image=png)
    assert (200, True) == (status, answer["ok"])  # the hub read the image
    tx = answer["answer"]["transaction"]  # the VerifyResponse as proto3 JSON
    assert slip.transaction.trans_ref == tx["transRef"]
    assert str(slip.transaction.amount.satang) == tx["amount"]["satang"]


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({}, "QR text or an image"),
        ({"image": b""}, "empty"),
    ],
)
async def test_bad_verify_input_is_refused_clearly(
    web: aiohttp.ClientSession, fields: dict[str, Any], fragment: str
) -> None:
    status, answer = await verify_form(web, "002", **fields)
    assert 400 == status
    assert fragment in answer["error"]


async def test_an_image_without_a_slip_qr_is_a_refused_verification(
    web: aiohttp.ClientSession,
) -> None:
    import io

    from PIL import Image

    blank = io.BytesIO()
    Image.new("L", (200, 200), 255).save(blank, format="PNG")
    status, answer = await verify_form(web, "002", image=blank.getvalue())
    not_image = (await verify_form(web, "002", image=b"not an image"))[1]
    assert (200, (False, "SLIP_IMAGE_NO_QR")) == (status, refused(answer))
    assert (False, "SLIP_IMAGE_UNREADABLE") == refused(not_image)


async def test_a_refused_verification_is_an_answer_not_an_error(
    web: aiohttp.ClientSession,
) -> None:
    status, answer = await verify_form(web, "002", qr_text="not a slip qr")
    assert (200, (False, "INVALID_SLIP_QR")) == (status, refused(answer))


async def test_the_console_is_refused_with_workers_and_off_loopback() -> None:
    from txverify.hub.settings import HubSettings

    with pytest.raises(ValueError, match="loopback only"):
        ConsoleSettings(0, host="0.0.0.0")
    with pytest.raises(ValueError, match="single hub process"):
        HubSettings(console=ConsoleSettings(0), shared=True, db="sqlite:////tmp/x.sqlite")


# --- the live feed ------------------------------------------------------------------------


def test_feed_rates_per_issuer_and_second_with_percentiles() -> None:
    now = [1000.2]
    feed = LiveFeed(window=3, clock=lambda: now[0])
    for ms in range(1, 101):
        feed.verified(Verification(0, issuer="014", elapsed=ms / 1000))
    feed.verified(
        Verification(
            0, issuer="002", status="UNAVAILABLE", reason="ISSUER_UNAVAILABLE", elapsed=0.005
        )
    )
    now[0] = 1001.5
    feed.verified(Verification(0, issuer="014", elapsed=0.002))
    now[0] = 1002.1
    rates = feed.rates()
    assert [999, 1000, 1001] == rates["seconds"]
    assert {"rate": [0, 100, 1], "p50_ms": [None, 50.0, 2.0], "p99_ms": [None, 99.0, 2.0],
            "errors": [0, 0, 0]} == rates["issuers"]["014"]  # fmt: skip
    assert [0, 1, 0] == rates["issuers"]["002"]["errors"]
    now[0] = 1010.0  # everything has aged out of the window
    feed.verified(Verification(0, issuer="014", elapsed=0.001))
    assert {} == feed.rates()["issuers"]


def test_feed_keeps_the_latest_newest_first_and_bounded() -> None:
    feed = LiveFeed(latest=3)
    for n in range(5):
        feed.verified(
            Verification(0, issuer="014", trans_ref=f"2026112701400000000{n}", elapsed=0.001)
        )
    latest = feed.latest()
    assert [5, 4, 3] == [row["seq"] for row in latest]
    assert "2026…0004" == latest[0]["trans_ref"]


@pytest.mark.parametrize(
    ("ref", "masked"), [("", ""), ("ABC", "…"), ("12345678", "…"), ("123456789", "1234…6789")]
)
def test_mask_reference(ref: str, masked: str) -> None:
    assert masked == mask_reference(ref)


def test_percentile_is_nearest_rank() -> None:
    assert 1 == percentile([1.0], 99)
    assert 2 == percentile([1.0, 2.0], 99)
    assert 1 == percentile([1.0, 2.0], 50)


async def test_a_taken_console_port_stops_the_hub_saying_which_port(
    hub_factory: HubFactory,
) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=f"console cannot listen on 127.0.0.1:{port}"):
            await hub_factory(console=ConsoleSettings(port))


async def test_an_unreachable_simulator_shows_no_banks_and_the_page_stays_live(
    hub_factory: HubFactory,
) -> None:
    running = await hub_factory(console=ConsoleSettings(0, simulator="127.0.0.1:1", token=TOKEN))
    assert running.console is not None
    async with aiohttp.ClientSession(base_url=running.console.url) as web:
        started = asyncio.get_running_loop().time()
        shown = await state(web)
        took = asyncio.get_running_loop().time() - started
        async with web.post("/api/banks/014/faults", json={}, headers=OPERATOR) as response:
            refused = response.status, await response.json()
    assert ([], True) == (shown["banks"], shown["hub"]["simulator"])
    assert took < 3.0
    assert 503 == refused[0]
