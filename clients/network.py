"""`txverify up`: the hub and simulated banks as separate processes, supervised together."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from txverify.banks import BANKS

DEFAULT_BANKS = ("002", "004", "006", "014", "025")
READY_PREFIX = "TXVERIFY-READY "
STARTUP_TIMEOUT = 30.0


class NetworkError(RuntimeError):
    """The network could not start; the message says which part and why."""


@dataclass(frozen=True, slots=True)
class BankInfo:
    """What the banks process reports for one bank once it listens."""

    code: str
    address: str
    samples: tuple[dict[str, Any], ...]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "clients.cli", *args]


def read_ready(stream: IO[str], proc: subprocess.Popen[str], what: str) -> dict[str, Any]:
    """Wait for the child's ready line on stdout; fail clearly if it exits first."""
    for line in stream:
        if line.startswith(READY_PREFIX):
            ready: dict[str, Any] = json.loads(line[len(READY_PREFIX) :])
            return ready
    code = proc.wait()
    raise NetworkError(f"{what} exited with code {code} before it was ready (see its log above)")


def wait_serving(address: str, timeout: float) -> None:
    """Poll grpc.health.v1 until the server at `address` says SERVING."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub: Any = health_pb2_grpc.HealthStub(channel)  # its stubs omit the methods
        while True:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise NetworkError(f"{address} did not become healthy within {timeout:.0f}s")
            time.sleep(0.1)


def members_toml(banks: Sequence[BankInfo]) -> str:
    lines = []
    for bank in banks:
        known = BANKS.get(bank.code)
        name = known.name if known else f"Simulated bank {bank.code}"
        lines += [
            "[[member]]",
            f'code = "{bank.code}"',
            f'name = "{name}"',
            'kind = "BANK"',
            f'issuer_endpoint = "{bank.address}"',
            "",
        ]
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class Network:
    """A running network: the hub's address, the banks, and the child processes."""

    hub_address: str
    banks: list[BankInfo]
    procs: list[subprocess.Popen[str]]


@contextlib.contextmanager
def running_network(
    *,
    banks: Sequence[str],
    hub_host: str,
    hub_port: int,
    seed: int,
    transactions: int,
) -> Iterator[Network]:
    """Start the banks process, then the hub pointed at them; stop both on exit."""
    procs: list[subprocess.Popen[str]] = []
    with tempfile.TemporaryDirectory(prefix="txverify-") as tmp:
        try:
            bank_proc = subprocess.Popen(
                _cli(
                    "banks",
                    "--codes",
                    ",".join(banks),
                    "--seed",
                    str(seed),
                    "--transactions",
                    str(transactions),
                ),
                stdout=subprocess.PIPE,
                text=True,
            )
            procs.append(bank_proc)
            assert bank_proc.stdout is not None
            ready = read_ready(bank_proc.stdout, bank_proc, "the simulated banks")
            infos = [BankInfo(b["code"], b["address"], tuple(b["samples"])) for b in ready["banks"]]
            members = Path(tmp) / "members.toml"
            members.write_text(members_toml(infos), encoding="utf-8")
            hub_proc = subprocess.Popen(
                _cli(
                    "hub",
                    "--members",
                    str(members),
                    "--host",
                    hub_host,
                    "--port",
                    str(hub_port),
                    "--ready-line",
                ),
                stdout=subprocess.PIPE,
                text=True,
            )
            procs.append(hub_proc)
            assert hub_proc.stdout is not None
            hub_address = read_ready(hub_proc.stdout, hub_proc, "the hub")["address"]
            wait_serving(hub_address, timeout=STARTUP_TIMEOUT)
            yield Network(hub_address, infos, procs)
        finally:
            stop_all(procs)


def wait_any(procs: Sequence[subprocess.Popen[str]]) -> subprocess.Popen[str]:
    """Block until one of the processes exits; return it."""
    while True:
        for proc in procs:
            if proc.poll() is not None:
                return proc
        time.sleep(0.2)


def stop_all(procs: Sequence[subprocess.Popen[str]], grace: float = 8.0) -> None:
    """SIGTERM every child still running, wait for them to drain, then SIGKILL stragglers."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
