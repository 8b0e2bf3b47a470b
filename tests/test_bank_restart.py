"""A simulated bank killed and restarted: the hub's circuit for it closes again, no slip is lost.

Real processes on loopback: `txverify banks --data DIR --issuer-port 014=P` and a
`txverify hub` pointed at it. A transfer is made, the banks' process is killed
with SIGKILL (no shutdown, no flush), the hub answers UNAVAILABLE and then fails
fast (circuit open), the banks are started again on the same data and port, and
within a few seconds both the slip made just before the kill and a seeded one
verify again.

Then how soon: bench/restart_recovery.py kills and restarts the banks 3 times while
014's slips go through two hubs (default settings, the fault matrix's) at 20/s, and
each hub's first OK must come within 1 s of 014 listening again, while the open
circuit answers in milliseconds during the outage. And an issuer that comes back
accepting connections but never answering gets one early probe, not one every few
hundred milliseconds (the gateway in-process, against a silent TCP listener).
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from conftest import stop_process
from txverify.cli.faultlab.restart import HUBS, Restart, measure
from txverify.errors import ServiceError, details_of
from txverify.hub.forwarding import ForwardingPolicy, IssuerGateway
from txverify.hub.registry import Member
from txverify.hub.resilience.breaker import BreakerSettings, CircuitState
from txverify.v1 import (
    common_pb2,
    simulator_pb2,
    simulator_pb2_grpc,
    verification_pb2,
    verification_pb2_grpc,
)

# slow: real processes or long runs; `make test-fast` leaves it out (`make test` runs it).
pytestmark = pytest.mark.slow

READY = "TXVERIFY-READY "


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _start(argv: list[str]) -> tuple[subprocess.Popen[str], dict[str, object]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "txverify.cli", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith(READY):
            ready: dict[str, object] = json.loads(line[len(READY) :])
            return proc, ready
    raise AssertionError(f"{argv[0]} exited before it was ready")


class Network:
    def __init__(self, tmp: Path) -> None:
        self.port = _free_port()
        self.banks_argv = [
            "banks", "--codes", "002,014", "--transactions", "30", "--data", str(tmp / "data"),
            "--issuer-port", f"014={self.port}", "--log-level", "WARNING",
        ]  # fmt: skip
        self.banks, ready = _start(self.banks_argv)
        self.control = str(ready["control"])
        banks = ready["banks"]
        assert isinstance(banks, list)
        self.sample = next(b["samples"][0]["qr_text"] for b in banks if b["code"] == "014")
        members = tmp / "members.toml"
        members.write_text(
            "".join(
                f'[[member]]\ncode = "{b["code"]}"\nname = "{b["name"]}"\n'
                f'issuer_endpoint = "{b["address"]}"\n\n'
                for b in banks
            )
        )
        self.hub, hub_ready = _start(
            ["hub", "--members", str(members), "--port", "0", "--ready-line",
             "--breaker-failures", "2", "--breaker-cooldown", "0.5", "--issuer-timeout", "2",
             "--log-level", "WARNING"]
        )  # fmt: skip
        self.channel = grpc.insecure_channel(str(hub_ready["address"]))
        self.stub = verification_pb2_grpc.VerificationServiceStub(self.channel)

    def verify(self, qr: str) -> tuple[grpc.StatusCode, str, float]:
        started = time.monotonic()
        try:
            self.stub.Verify(
                verification_pb2.VerifyRequest(qr_text=qr),
                timeout=10,
                metadata=(("x-member-id", "002"),),
            )
        except grpc.RpcError as error:
            d = details_of(error)
            return d.status, d.reason, time.monotonic() - started
        return grpc.StatusCode.OK, "", time.monotonic() - started

    def transfer(self) -> str:
        with grpc.insecure_channel(self.control) as channel:
            control = simulator_pb2_grpc.BankSimulatorStub(channel)
            payer = control.OpenAccount(
                simulator_pb2.OpenAccountRequest(
                    bank="014",
                    name_th="สมชาย ทดสอบ",
                    name_en="Somchai Thotsop",
                    initial_balance_satang=100_000,
                ),
                timeout=5,
            )
            request = simulator_pb2.TransferRequest(
                bank="014",
                from_account=payer.account.account_number,
                to_bank="011",
                amount_satang=12_345,
            )
            request.to_proxy.CopyFrom(
                common_pb2.Proxy(type=common_pb2.PROXY_TYPE_MSISDN, value="0812345678")
            )
            slip: simulator_pb2.TransferResponse = control.Transfer(request, timeout=5)
        return slip.qr_text

    def close(self) -> None:
        self.channel.close()
        stop_process(self.hub)
        stop_process(self.banks)


@pytest.fixture
def network(tmp_path: Path) -> Iterator[Network]:
    net = Network(tmp_path)
    try:
        yield net
    finally:
        net.close()


@pytest.mark.timeout(120)
def test_killed_bank_comes_back_its_circuit_closes_and_no_slip_is_lost(network: Network) -> None:
    fresh = network.transfer()
    assert grpc.StatusCode.OK == network.verify(fresh)[0]

    network.banks.send_signal(signal.SIGKILL)
    network.banks.wait(timeout=10)
    down = [network.verify(fresh) for _ in range(4)]
    assert all(status == grpc.StatusCode.UNAVAILABLE for status, _, _ in down), down
    assert "ISSUER_UNAVAILABLE" == down[-1][1]
    assert down[-1][2] < 0.5, "the open circuit should fail fast"

    network.banks.stdout.close()  # type: ignore[union-attr]
    network.banks, _ = _start(network.banks_argv)
    deadline = time.monotonic() + 15
    while (status := network.verify(fresh)[0]) != grpc.StatusCode.OK:
        assert status == grpc.StatusCode.UNAVAILABLE
        assert time.monotonic() < deadline, "the hub never reached the restarted bank"
        time.sleep(0.2)

    assert grpc.StatusCode.OK == network.verify(network.sample)[0]


# --- restart to first OK (bench/restart_recovery.py) ------------------------------------------

RESTARTS = 3  # `python bench/restart_recovery.py` runs 10, 8 s down each
DOWN = 2.0  # seconds from the kill to the restart: the circuits open and gRPC backs off
FIRST_OK_WITHIN = 1.0
_UNAVAILABLE = "UNAVAILABLE/ISSUER_UNAVAILABLE"


@pytest.fixture(scope="module")
def restarts(tmp_path_factory: pytest.TempPathFactory) -> list[Restart]:
    work = tmp_path_factory.mktemp("restarts")
    results = asyncio.run(measure(work, restarts=RESTARTS, down=DOWN))
    print()
    for r in results:
        print(r)
    return results


@pytest.mark.timeout(120)
def test_a_restarted_bank_verifies_within_a_second_of_listening_again(
    restarts: list[Restart],
) -> None:
    late = [
        f"{name} restart {r.n}: {r.to_first_ok_s[name]} s"
        for r in restarts
        for name in HUBS
        if (s := r.to_first_ok_s[name]) is None or s >= FIRST_OK_WITHIN
    ]

    assert RESTARTS == len(restarts)
    assert [] == late


@pytest.mark.timeout(120)
def test_while_the_bank_is_down_the_open_circuit_answers_at_once(restarts: list[Restart]) -> None:
    allowed = {"OK", _UNAVAILABLE, f"{_UNAVAILABLE}/circuit_open"}
    for r in restarts:
        for name in HUBS:
            assert set(r.answers[name]) <= allowed, (name, r)
            assert r.answers[name].get(f"{_UNAVAILABLE}/circuit_open", 0) > 0, (name, r)
            p50 = r.fail_fast_p50_ms[name]
            assert p50 is not None, (name, r)
            assert p50 < 50, (name, r)


# --- back on its port, but silent ---------------------------------------------------------------


@pytest.mark.timeout(30)
async def test_an_issuer_back_but_not_answering_gets_one_early_probe_then_the_cooldown() -> None:
    cooldown, timeout, watched = 1.5, 0.3, 3.0
    port = _free_port()
    gateway = IssuerGateway(
        ForwardingPolicy(
            issuer_timeout=timeout, breaker=BreakerSettings(2, cooldown, failing_seconds=0.3)
        )
    )
    issuer = Member(code="014", issuer_endpoint=f"127.0.0.1:{port}")
    slip = common_pb2.SlipRef(trans_ref="014A0000000001", sending_bank="014")
    loop = asyncio.get_running_loop()
    sent: list[float] = []  # when each inquiry that went to the issuer started

    async def inquire() -> None:
        started = loop.time()
        try:
            await gateway.inquire(issuer, slip, requester="002", request_id="r", budget=1.0)
        except ServiceError as error:
            if error.metadata.get("cause") != "circuit_open":
                sent.append(started)

    accepted: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # accepted, never a byte back: not gRPC, not closed

    calls: list[asyncio.Task[None]] = []

    async def drive(seconds: float) -> None:
        for _ in range(int(seconds * 20)):
            calls.append(loop.create_task(inquire()))
            await asyncio.sleep(0.05)

    listener = None
    try:
        await drive(1.0)  # refused: the circuit opens, the watcher sees the refusals
        assert CircuitState.OPEN == gateway.circuit_state("014")
        listener = await asyncio.start_server(hold, "127.0.0.1", port)
        listening = loop.time()
        await drive(watched)
        await asyncio.gather(*calls)
    finally:
        await gateway.close()
        for writer in accepted:
            writer.close()
        if listener is not None:
            listener.close()
            await listener.wait_closed()

    probes = [t - listening for t in sent if t >= listening]
    # One probe at once (the port refused, then accepted), then one per cooldown + timeout;
    # a watcher probing whenever the port accepts would send one every ~0.5 s.
    assert probes, "no probe after the issuer listened again"
    assert probes[0] < 0.5, probes
    assert len(probes) <= 1 + watched / cooldown, probes
    assert len(accepted) <= 10  # the watcher's connects: a few, not one every 0.15 s
