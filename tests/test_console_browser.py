"""The console in a real browser: Debian's headless Chromium (/usr/bin/chromium), driven
by Playwright, against a real hub with simulated banks.

Chromium comes from Debian's packages (`make browser` or .ci/run installs it);
where it is missing these tests skip saying so, and fail instead under
TXVERIFY_REQUIRE_CHROMIUM=1 (CI). With TXVERIFY_SCREENSHOTS=DIR they also save
the screenshots that docs/ holds (`make screenshots`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from conftest import CONSOLE_TOKEN as TOKEN
from conftest import member_channel
from txverify.hub.app import RunningHub
from txverify.hub.console.feed import mask_reference
from txverify.simulators.server import RunningSimulator
from txverify.slipimage import render_slip_png
from txverify.v1 import simulator_pb2, simulator_pb2_grpc, verification_pb2, verification_pb2_grpc

playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is a dev extra")
CHROMIUM = os.environ.get("TXVERIFY_CHROMIUM", "/usr/bin/chromium")
WAIT_MS = 8000  # what "within a few seconds" means here

# slow: real processes or long runs; `make test-fast` leaves it out (`make test` runs it).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


@pytest.fixture
def chromium() -> str:
    if not Path(CHROMIUM).exists() and not shutil.which(CHROMIUM):
        why = (
            f"no Chromium at {CHROMIUM}: `make browser` installs Debian's chromium "
            "(or set TXVERIFY_CHROMIUM)"
        )
        if os.environ.get("TXVERIFY_REQUIRE_CHROMIUM"):
            pytest.fail(why)
        pytest.skip(why)
    return CHROMIUM


@pytest.fixture
async def page(chromium: str, console_hub: RunningHub) -> AsyncIterator[Any]:
    assert console_hub.console is not None
    async with playwright_api.async_playwright() as driver:
        browser = await driver.chromium.launch(
            executable_path=chromium, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            tab = await browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            tab.on("pageerror", lambda error: errors.append(str(error)))
            tab.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
            await tab.goto(console_hub.console.url)
            await playwright_api.expect(tab.locator("#conn")).to_have_text("live", timeout=WAIT_MS)
            yield tab
            assert [] == [e for e in errors if "/api/events" not in e]  # the stream ends at stop
        finally:
            await browser.close()


async def visible_slips(sim: RunningSimulator, bank: str) -> list[simulator_pb2.Slip]:
    async with grpc.aio.insecure_channel(sim.control_address) as channel:
        page = await simulator_pb2_grpc.BankSimulatorStub(channel).ListTransactions(
            simulator_pb2.ListTransactionsRequest(bank=bank, page_size=50)
        )
    return [s for s in page.slips if s.state == simulator_pb2.SLIP_STATE_VISIBLE]


@contextlib.asynccontextmanager
async def traffic(hub: RunningHub, qrs: list[str], per_second: float) -> AsyncIterator[None]:
    """Verifications in the background while the page is looked at."""

    async def send() -> None:
        async with member_channel(hub.port) as channel:
            stub = verification_pb2_grpc.VerificationServiceStub(channel)
            n = 0
            while True:
                with contextlib.suppress(grpc.aio.AioRpcError):
                    await stub.Verify(
                        verification_pb2.VerifyRequest(qr_text=qrs[n % len(qrs)]), timeout=2
                    )
                n += 1
                await asyncio.sleep(1 / per_second)

    task = asyncio.create_task(send())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def screenshot(page: Any, name: str) -> None:
    target = os.environ.get("TXVERIFY_SCREENSHOTS")
    if target:
        await asyncio.to_thread(Path(target).mkdir, parents=True, exist_ok=True)
        await page.screenshot(path=str(Path(target) / name), full_page=True)


async def log_in(page: Any) -> None:
    await page.fill("#login input[name=token]", TOKEN)
    await page.click("#login button[type=submit]")
    await playwright_api.expect(page.locator("#operator")).to_have_text("operator")


async def test_the_page_loads_and_the_member_table_matches_the_registry(
    page: Any, console_hub: RunningHub, simulator: RunningSimulator
) -> None:
    expect = playwright_api.expect
    qrs = [
        s.qr_text for code in ("002", "014", "900") for s in await visible_slips(simulator, code)
    ]
    async with traffic(console_hub, qrs, per_second=15):
        rows = page.locator("table#members tbody tr")
        members = console_hub.membership.directory.all()
        await expect(rows).to_have_count(len(members))
        for member in members:
            row = page.locator(f'table#members tbody tr[data-code="{member.code}"]')
            await expect(row.locator(".name")).to_have_text(member.name)
            await expect(row.locator(".status")).to_have_text(member.status.value)
            await expect(row.locator(".circuit")).to_have_text("CLOSED")
        # Read-only until the operator token is given.
        await expect(page.locator("#operator")).to_have_text("read-only")
        await expect(page.locator('tr[data-code="014"] button.suspend')).to_be_disabled()
        await expect(page.locator("#hub-address")).to_have_text(f"127.0.0.1:{console_hub.port}")
        # The charts' table fills with the traffic's issuers.
        await expect(page.locator('table#issuer-rates tr[data-issuer="014"]')).to_have_count(
            1, timeout=WAIT_MS
        )
        if os.environ.get("TXVERIFY_SCREENSHOTS"):
            await asyncio.sleep(3)  # a few seconds of chart for the screenshot
        await screenshot(page, "console-overview.png")


async def test_hang_on_one_bank_shows_its_circuit_opening(
    page: Any, console_hub: RunningHub, simulator: RunningSimulator
) -> None:
    expect = playwright_api.expect
    await log_in(page)
    bank = page.locator('section#banks div.bank[data-bank="014"]')
    await bank.locator("input[name=hang]").check()
    await bank.locator("button.apply").click()
    await expect(bank.locator(".in-force")).to_contain_text("hang", timeout=WAIT_MS)
    circuit = page.locator('table#members tr[data-code="014"] .circuit')
    qrs = [s.qr_text for s in await visible_slips(simulator, "014")]
    async with traffic(console_hub, qrs, per_second=10):
        await expect(circuit).to_have_text("OPEN", timeout=WAIT_MS)
        await expect(page.locator('table#members tr[data-code="014"]')).to_have_class(
            "circuit-open", timeout=WAIT_MS
        )
        await expect(page.locator('table#members tr[data-code="002"] .circuit')).to_have_text(
            "CLOSED"
        )
        await screenshot(page, "console-circuit-open.png")
    await bank.locator("button.clear").click()
    await expect(bank.locator(".in-force")).not_to_contain_text("hang", timeout=WAIT_MS)


async def test_a_verification_by_the_cli_appears_in_the_latest_list(
    page: Any, console_hub: RunningHub, simulator: RunningSimulator
) -> None:
    slip = (await visible_slips(simulator, "900"))[0]
    cli = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "txverify.cli", "verify", slip.qr_text,
        "--hub", f"127.0.0.1:{console_hub.port}", "--member", "014",
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await cli.communicate()
    assert 0 == cli.returncode, stderr.decode()
    row = page.locator("table#recent tbody tr").filter(
        has_text=mask_reference(slip.transaction.trans_ref)
    )
    expect = playwright_api.expect
    await expect(row).to_have_count(1, timeout=WAIT_MS)
    await expect(row.locator(".requester")).to_have_text("014")
    await expect(row.locator(".issuer")).to_have_text("900")
    await expect(row.locator(".status")).to_have_text("OK")
    assert slip.transaction.trans_ref not in await page.content()


async def test_an_uploaded_slip_png_verifies(
    page: Any, simulator: RunningSimulator, tmp_path: Path
) -> None:
    expect = playwright_api.expect
    slip = (await visible_slips(simulator, "002"))[0]
    png = tmp_path / "slip.png"
    png.write_bytes(render_slip_png(slip.transaction, slip.qr_text))
    await log_in(page)
    await page.select_option("form#verify select[name=member]", "014")
    await page.set_input_files("form#verify input[type=file][name=image]", str(png))
    await page.click("form#verify button[type=submit]")
    result = page.locator("#verify-result")
    await expect(result).to_have_attribute("data-ok", "true", timeout=WAIT_MS)
    await expect(result.locator(".verdict")).to_have_text("VALID")
    await expect(result.locator(".trans-ref")).to_contain_text(slip.transaction.trans_ref)
    await screenshot(page, "console-verify.png")
