"""The JSON API examples (examples/json) against a real in-process hub and banks.

Each example runs as a subprocess: verify.sh (curl; skipped without curl), verify_httpx.py
(always), fetch.mjs (skipped without Node 20 or newer) and connect-node/verify.mjs, after
`npm ci` there (skipped when node or npm is missing or npm cannot reach its registry).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from conftest import HubFactory, members_of
from txverify import miniqr
from txverify.hub.app import RunningHub, start_hub
from txverify.hub.identity import IdentityMode
from txverify.hub.resilience.ratelimit import RateLimit
from txverify.hub.settings import HubSettings
from txverify.runtime import tls
from txverify.simulators.bank import SlipVisibility
from txverify.simulators.ledger import LedgerTransaction, TxStatus
from txverify.simulators.server import RunningSimulator, start_simulator
from txverify.simulators.settings import SimulatorSettings

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "json"
CONNECT_NODE = EXAMPLES / "connect-node"
NPM_CI_TIMEOUT = 90.0  # seconds; a warm npm cache needs a few
RUN_TIMEOUT = 30.0  # one example's run
GENERATE_TIMEOUT = 60.0
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
EXAMPLE_NAMES = ("curl", "httpx", "fetch", "connect-node")

# npm ci is part of the first connect-node test's time.
# slow: real processes or long runs; `make test-fast` leaves it out (`make test` runs it).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(NPM_CI_TIMEOUT + 60)]


def _node() -> str:
    """The node executable, Node 20 or newer, or a skip saying why not."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("the Node.js examples need `node` on PATH (Node 20 or newer)")
    version = subprocess.run(
        [node, "--version"], capture_output=True, text=True, timeout=30, check=True
    ).stdout.strip()
    if int(version.lstrip("v").split(".")[0]) < 20:
        pytest.skip(f"the Node.js examples need Node 20 or newer, found {version}")
    return node


@pytest.fixture(scope="module")
def connect_node() -> str:
    """The node executable, once `npm ci` has installed connect-node's locked dependencies."""
    node = _node()
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("the Connect example needs `npm` on PATH")
    try:
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
            cwd=CONNECT_NODE,
            capture_output=True,
            text=True,
            timeout=NPM_CI_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.skip(
            f"npm ci in {CONNECT_NODE} took over {NPM_CI_TIMEOUT:.0f} s (registry unreachable?)"
        )
    if done.returncode != 0:
        offline = [
            line for line in done.stderr.splitlines() if any(m in line for m in _OFFLINE_MARKERS)
        ]
        if offline:
            pytest.skip(f"npm ci cannot reach the npm registry: {offline[0].strip()}")
        pytest.fail(f"npm ci failed in {CONNECT_NODE}:\n{done.stderr[-4000:]}")
    return node


def _command(name: str, request: pytest.FixtureRequest) -> list[str]:
    """The command line of one example, before its options and QR text (or a skip)."""
    if name == "curl":
        if shutil.which("curl") is None:
            pytest.skip("verify.sh needs curl on PATH")
        return ["sh", str(EXAMPLES / "verify.sh")]
    if name == "httpx":
        return [sys.executable, str(EXAMPLES / "verify_httpx.py")]
    if name == "fetch":
        return [_node(), str(EXAMPLES / "fetch.mjs")]
    assert "connect-node" == name
    return [request.getfixturevalue("connect_node"), str(CONNECT_NODE / "verify.mjs")]


@pytest.fixture(params=EXAMPLE_NAMES)
def example(request: pytest.FixtureRequest) -> list[str]:
    return _command(request.param, request)


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


async def _run(command: list[str], *args: str) -> Run:
    """Run an example without blocking the event loop the hub serves on."""
    # TXVERIFY_CERTS and friends from the caller's shell must not change what is tested.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TXVERIFY_")}
    proc = await asyncio.create_subprocess_exec(
        *command, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=RUN_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return Run(proc.returncode, stdout.decode(), stderr.decode())


def _visible_slip(sim: RunningSimulator, code: str = "014") -> LedgerTransaction:
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


def _qr(tx: LedgerTransaction) -> str:
    return miniqr.build(tx.sending_bank, tx.trans_ref)


def _bad_crc(qr: str) -> str:
    return qr[:-1] + ("0" if qr[-1] != "0" else "1")  # the last CRC digit


def _baht(satang: int) -> str:
    return f"{satang // 100:,}.{satang % 100:02d}"


@pytest.fixture
async def json_url(hub_factory: HubFactory) -> str:
    hub = await hub_factory(json_port=0)
    assert hub.json_api is not None
    return f"http://127.0.0.1:{hub.json_api.port}"


def _answer(run: Run) -> dict[str, Any]:
    try:
        answer: dict[str, Any] = json.loads(run.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"exited {run.code} without JSON on stdout:\n{run.stdout!r}\n{run.stderr!r}")
    return answer


def _assert_valid(run: Run, tx: LedgerTransaction) -> None:
    assert 0 == run.code, run.output
    answer = _answer(run)
    assert "VERDICT_VALID" == answer["verdict"]
    assert str(tx.amount) == answer["transaction"]["amount"]["satang"]  # int64: a string
    assert tx.sending_bank == answer["transaction"]["sendingBank"]
    assert tx.trans_ref == answer["transaction"]["transRef"]
    assert "verdict:      VERDICT_VALID" in run.stderr
    assert f"amount:       {tx.amount} satang ({_baht(tx.amount)} THB)" in run.stderr
    assert f"sending bank: {tx.sending_bank}" in run.stderr


# --- every example: a valid slip, a bad QR, no member, a rate limit ------------------


async def test_a_seeded_slip_is_valid(
    example: list[str], json_url: str, simulator: RunningSimulator
) -> None:
    tx = _visible_slip(simulator)

    run = await _run(example, "--url", json_url, "--member", "002", _qr(tx))

    _assert_valid(run, tx)


async def test_a_bad_crc_is_invalid_slip_qr(
    example: list[str], json_url: str, simulator: RunningSimulator
) -> None:
    run = await _run(
        example, "--url", json_url, "--member", "002", _bad_crc(_qr(_visible_slip(simulator)))
    )

    assert 2 == run.code, run.output
    assert "INVALID_SLIP_QR" in run.output
    assert "6400" in run.output
    assert "error:        invalid_argument" in run.stderr
    assert "reason:       INVALID_SLIP_QR" in run.stderr
    assert "outcome code: 6400" in run.stderr
    assert "invalid_argument" == _answer(run)["code"]


async def test_a_caller_that_is_no_member_is_unknown_member(
    example: list[str], json_url: str, simulator: RunningSimulator
) -> None:
    run = await _run(example, "--url", json_url, "--member", "999", _qr(_visible_slip(simulator)))

    assert 2 == run.code, run.output
    assert "reason:       UNKNOWN_MEMBER" in run.stderr
    assert "outcome code: 6421" in run.stderr
    assert "unauthenticated" == _answer(run)["code"]


async def test_a_rate_limited_call_shows_the_retry_delay(
    example: list[str], hub_factory: HubFactory, simulator: RunningSimulator
) -> None:
    hub = await hub_factory(json_port=0, rate_limit=RateLimit(rate=0.01, burst=1))
    assert hub.json_api is not None
    url = f"http://127.0.0.1:{hub.json_api.port}"
    qr = _qr(_visible_slip(simulator))
    async with httpx.AsyncClient(base_url=url, timeout=RUN_TIMEOUT) as client:
        first = await client.post(
            "/txverify.v1.VerificationService/Verify",
            json={"qrText": qr},
            headers={"x-member-id": "002"},
        )  # the one token
    assert 200 == first.status_code

    run = await _run(example, "--url", url, "--member", "002", qr)

    assert 2 == run.code, run.output
    assert "reason:       RATE_LIMITED" in run.stderr
    assert "retry after:" in run.stderr
    assert "resource_exhausted" == _answer(run)["code"]


# --- mutual TLS: the certificate names the member -----------------------------------


@pytest.fixture
async def tls_url(tmp_path: Path) -> AsyncIterator[tuple[str, Path, RunningSimulator]]:
    """A hub whose JSON API takes member identity from client certificates."""
    certs = tmp_path / "certs"
    tls.init_dev_pki(certs, ["002", "014"])
    sim = await start_simulator(SimulatorSettings(codes=("002", "014"), transactions=30, pki=certs))
    hub: RunningHub | None = None
    try:
        hub = await start_hub(
            HubSettings(
                port=0, json_port=0, members=members_of(sim), mode=IdentityMode.TLS, pki=certs
            )
        )
        assert hub.json_api is not None
        yield f"https://127.0.0.1:{hub.json_api.port}", certs, sim
    finally:
        if hub is not None:
            await hub.stop(grace=0)
        await sim.stop()


@pytest.mark.parametrize("name", ["curl", "httpx", "connect-node"])  # fetch has no client cert
async def test_under_mtls_the_certificate_names_the_member(
    name: str, request: pytest.FixtureRequest, tls_url: tuple[str, Path, RunningSimulator]
) -> None:
    url, certs, sim = tls_url
    command = _command(name, request)
    tx = _visible_slip(sim)

    run = await _run(command, "--url", url, "--certs", str(certs), "--member", "002", _qr(tx))

    _assert_valid(run, tx)


# --- verify_httpx as a library --------------------------------------------------------


@pytest.fixture(scope="module")
def verify_httpx() -> ModuleType:
    """examples/json/verify_httpx.py, imported from its path."""
    spec = importlib.util.spec_from_file_location("verify_httpx", EXAMPLES / "verify_httpx.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_verify_returns_the_answer_and_raises_verify_error(
    verify_httpx: ModuleType, json_url: str, simulator: RunningSimulator
) -> None:
    tx = _visible_slip(simulator)

    answer = await asyncio.to_thread(verify_httpx.verify, json_url, "002", _qr(tx))
    with pytest.raises(verify_httpx.VerifyError) as bad_qr:
        await asyncio.to_thread(verify_httpx.verify, json_url, "002", _bad_crc(_qr(tx)))
    with pytest.raises(verify_httpx.VerifyError) as no_member:
        await asyncio.to_thread(verify_httpx.verify, json_url, None, _qr(tx))

    assert ("VERDICT_VALID", str(tx.amount)) == (
        answer["verdict"],
        answer["transaction"]["amount"]["satang"],
    )
    error = bad_qr.value
    assert ("invalid_argument", 400, "INVALID_SLIP_QR", "6400") == (
        error.code,
        error.http_status,
        error.reason,
        error.outcome_code,
    )
    assert {"qr_reason": "BAD_CRC", "field": "91"}.items() <= error.metadata.items()
    assert error.retry_delay is None
    assert ("unauthenticated", 401, "UNKNOWN_MEMBER", "6421") == (
        no_member.value.code,
        no_member.value.http_status,
        no_member.value.reason,
        no_member.value.outcome_code,
    )


# --- connect-node's generated code is what protoc-gen-es makes of proto/ -------------


def test_the_committed_generated_code_is_current(connect_node: str, tmp_path: Path) -> None:
    done = subprocess.run(
        ["sh", str(CONNECT_NODE / "generate.sh"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=GENERATE_TIMEOUT,
        env={**os.environ, "PYTHON": sys.executable},
        check=False,
    )
    assert 0 == done.returncode, done.stdout + done.stderr

    # txverify's own files must match byte for byte; google/rpc/error_details_pb.js follows
    # the googleapis-common-protos installed, so only its presence and exports are checked.
    committed = CONNECT_NODE / "gen"
    for name in ("txverify/v1/verification_pb.js", "txverify/v1/common_pb.js"):
        assert (tmp_path / name).read_text() == (committed / name).read_text(), (
            f"{committed / name} is stale: run `sh generate.sh` in {CONNECT_NODE} (after npm ci)"
        )
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.js")) == sorted(
        p.relative_to(committed) for p in committed.rglob("*.js")
    )
    rpc = (committed / "google/rpc/error_details_pb.js").read_text()
    for schema in ("ErrorInfoSchema", "RetryInfoSchema", "BadRequestSchema"):
        assert f"export const {schema} " in rpc
