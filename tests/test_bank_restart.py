"""A simulated bank killed and restarted: the hub's circuit for it closes again, no slip is lost.

Real processes on loopback: `txverify banks --data DIR --issuer-port 014=P` and a
`txverify hub` pointed at it. A transfer is made, the banks' process is killed
with SIGKILL (no shutdown, no flush), the hub answers UNAVAILABLE and then fails
fast (circuit open), the banks are started again on the same data and port, and
within a few seconds both the slip made just before the kill and a seeded one
verify again.
"""

from __future__ import annotations

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

from txverify.errors import details_of
from txverify.v1 import (
    common_pb2,
    simulator_pb2,
    simulator_pb2_grpc,
    verification_pb2,
    verification_pb2_grpc,
)

READY = "TXVERIFY-READY "


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _start(argv: list[str]) -> tuple[subprocess.Popen[str], dict[str, object]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "clients.cli", *argv],
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
