"""The Node.js example client (examples/node) against a real in-process hub and banks.

Skipped when node or npm is missing, or when npm cannot reach its registry.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from txverify import miniqr
from txverify.hub.app import RunningHub
from txverify.simulators.bank import SlipVisibility
from txverify.simulators.ledger import LedgerTransaction, TxStatus
from txverify.simulators.server import RunningSimulator

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "node"
NPM_CI_TIMEOUT = 90.0  # seconds; a warm npm cache needs a few
NODE_TIMEOUT = 30.0
# npm's error codes when the registry cannot be reached (the only failure that skips).
_OFFLINE_MARKERS = (
    "ENOTFOUND",
    "EAI_AGAIN",
    "ECONNREFUSED",
    "ECONNRESET",
    "ETIMEDOUT",
    "ENETUNREACH",
    "EHOSTUNREACH",
    "network request",
)

# npm ci is part of the first test's time.
# slow: real processes or long runs; `make test-fast` leaves it out (`make test` runs it).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(NPM_CI_TIMEOUT + 60)]


@pytest.fixture(scope="module")
def node() -> str:
    """The node executable, once `npm ci` has installed the example's locked dependencies."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("the Node.js example needs `node` and `npm` on PATH (Node 20 or newer)")
    version = subprocess.run(
        [node, "--version"], capture_output=True, text=True, timeout=30, check=True
    ).stdout.strip()
    if int(version.lstrip("v").split(".")[0]) < 20:
        pytest.skip(f"the Node.js example needs Node 20 or newer, found {version}")
    try:
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
            cwd=EXAMPLE,
            capture_output=True,
            text=True,
            timeout=NPM_CI_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.skip(f"npm ci in {EXAMPLE} took over {NPM_CI_TIMEOUT:.0f} s (registry unreachable?)")
    if done.returncode != 0:
        offline = [
            line for line in done.stderr.splitlines() if any(m in line for m in _OFFLINE_MARKERS)
        ]
        if offline:
            pytest.skip(f"npm ci cannot reach the npm registry: {offline[0].strip()}")
        pytest.fail(f"npm ci failed in {EXAMPLE}:\n{done.stderr[-4000:]}")
    return node


def _visible_slip(sim: RunningSimulator, code: str) -> LedgerTransaction:
    """A seeded transfer the issuer finds: visible, completed, not a bill payment."""
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


async def _verify_js(node: str, port: int, qr: str) -> tuple[int, dict[str, Any]]:
    """Run verify.js as member 002 without blocking the event loop the hub serves on."""
    # TXVERIFY_CERTS and friends from the caller's shell must not switch the example to mTLS.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TXVERIFY_")}
    proc = await asyncio.create_subprocess_exec(
        node, str(EXAMPLE / "verify.js"), "--hub", f"127.0.0.1:{port}", "--member", "002", qr,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=NODE_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    try:
        answer: dict[str, Any] = json.loads(stdout)
    except json.JSONDecodeError:
        pytest.fail(f"verify.js exited {proc.returncode} without JSON:\n{stdout!r}\n{stderr!r}")
    return proc.returncode, answer


async def test_node_client_verifies_a_seeded_slip(
    node: str, simulator: RunningSimulator, hub: RunningHub
) -> None:
    raw = _visible_slip(simulator, "014")

    code, answer = await _verify_js(node, hub.port, miniqr.build(raw.sending_bank, raw.trans_ref))

    assert 0 == code, answer
    assert raw.trans_ref == answer["transaction"]["transRef"]
    assert "014" == answer["transaction"]["sendingBank"]
    assert str(raw.amount) == answer["transaction"]["amount"]["satang"]  # int64 as a string
    assert "VERDICT_VALID" == answer["verdict"]
    assert answer["replayed"] is False


async def test_node_client_decodes_the_error_details_of_a_bad_crc(
    node: str, simulator: RunningSimulator, hub: RunningHub
) -> None:
    raw = _visible_slip(simulator, "014")
    qr = miniqr.build(raw.sending_bank, raw.trans_ref)
    corrupted = qr[:-1] + ("0" if qr[-1] != "0" else "1")  # the last CRC digit

    code, answer = await _verify_js(node, hub.port, corrupted)

    assert 2 == code, answer
    error = answer["error"]
    assert "INVALID_ARGUMENT" == error["status"]
    assert "INVALID_SLIP_QR" == error["reason"]
    assert "6400" == error["code"]
    assert "txverify" == error["domain"]
    assert {"field": "91", "qr_reason": "BAD_CRC"}.items() <= error["metadata"].items()
    assert "qr_text[91]" == error["violations"][0]["field"]
