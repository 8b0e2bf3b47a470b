"""Restart to first OK: the banks' process is SIGKILLed and started again on the same port
while bank 014's slips go through the hub; how soon after 014 listens again it verifies.

    python bench/restart_recovery.py [--restarts 10] [--down 8] [--rate 20] [--json out.json]
    make bench-restarts

Real processes on loopback: `txverify banks --data DIR --issuer-port 014=P` (the same
ledgers and port after every restart) and two `txverify hub`s routing to it, side by side
so every restart is measured under both settings at once: one with the hub's defaults
(issuer timeout 5 s, circuit open after 5 consecutive failures, 5 s cooldown) and one with
the fault matrix's (0.5 s, 3, 1 s). Each hub gets 014's slips at `--rate` per second (open
loop) the whole time. Per restart: SIGKILL, `--down` seconds, the banks started again; the
moment 014's port accepts a TCP connection again is "listening"; the figure is the time
from then to the first OK answer of each hub. It also counts each hub's answers between
the kill and that OK, and how fast the open circuit answered meanwhile.

tests/test_bank_restart.py runs 3 restarts and asserts every figure is under 1 s;
bench/restart_recovery.py (the script) exits 1 when a figure is over `--limit` (or 014
never verified again).
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import socket
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from txverify.cli.faultlab.matrix import outcome_of
from txverify.cli.faultlab.processes import Server, start_server, write_members
from txverify.cli.network import cli_argv
from txverify.v1 import (
    verification_pb2,
    verification_pb2_grpc,
)

ISSUER, REQUESTER = "014", "002"
CALL_TIMEOUT = 10.0  # the callers' deadline: longer than either hub's issuer timeout
_MATRIX = ("--issuer-timeout", "0.5", "--breaker-failures", "3", "--breaker-cooldown", "1",
           "--breaker-failing-seconds", "0.5")  # fmt: skip
# The two hubs: name -> `txverify hub` flags beyond the members file.
HUBS: dict[str, tuple[str, ...]] = {"default": (), "matrix": _MATRIX}
_OPEN = "UNAVAILABLE/ISSUER_UNAVAILABLE/circuit_open"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True, slots=True)
class Answer:
    done: float  # perf_counter when the answer came
    seconds: float  # latency
    outcome: str  # OK, or STATUS/REASON[/cause]


class Stream:
    """One hub's open loop of 014's slips: every answer kept, in the order they came."""

    def __init__(self, address: str, qrs: list[str], rate: float) -> None:
        self.channel = grpc.aio.insecure_channel(address)
        self.stub = verification_pb2_grpc.VerificationServiceStub(self.channel)
        self.qrs, self.rate = qrs, rate
        self.answers: list[Answer] = []
        self._calls: set[asyncio.Future[None]] = set()

    async def _call(self, qr: str) -> None:
        started = time.perf_counter()
        try:
            await self.stub.Verify(
                verification_pb2.VerifyRequest(qr_text=qr),
                timeout=CALL_TIMEOUT,
                metadata=(("x-member-id", REQUESTER),),
            )
            outcome = "OK"
        except grpc.aio.AioRpcError as error:
            outcome = outcome_of(error)
        now = time.perf_counter()
        self.answers.append(Answer(now, now - started, outcome))

    async def run(self) -> None:
        t0 = time.perf_counter()
        for i in itertools.count():
            delay = t0 + i / self.rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            call = asyncio.ensure_future(self._call(self.qrs[i % len(self.qrs)]))
            self._calls.add(call)
            call.add_done_callback(self._calls.discard)

    def first_ok_after(self, t: float) -> float | None:
        return next((a.done for a in self.answers if a.done > t and a.outcome == "OK"), None)

    def steady(self, last: int = 5) -> bool:
        tail = self.answers[-last:]
        return len(tail) == last and all(a.outcome == "OK" for a in tail)

    async def close(self) -> None:
        if self._calls:
            await asyncio.gather(*self._calls, return_exceptions=True)
        await self.channel.close()


@dataclass
class Restart:
    n: int
    down_s: float  # from the kill until 014's port accepted a connection again
    to_first_ok_s: dict[str, float | None]  # hub -> seconds from listening to its first OK
    answers: dict[str, dict[str, int]] = field(default_factory=dict)  # kill..first OK
    fail_fast_p50_ms: dict[str, float | None] = field(default_factory=dict)


class Banks:
    """`txverify banks` with its ledgers in a directory and 014 on a fixed port."""

    def __init__(self, work: Path) -> None:
        self.work, self.port = work, free_port()
        self.argv = cli_argv(
            "banks", "--codes", f"{REQUESTER},{ISSUER}", "--transactions", "30",
            "--data", str(work / "ledgers"), "--issuer-port", f"{ISSUER}={self.port}",
            "--log-level", "WARNING",
        )  # fmt: skip
        self.starts = 0
        self.server = self.start()

    def start(self) -> Server:
        self.starts += 1
        return start_server("banks", self.argv, self.work / f"banks-{self.starts}.log")

    def kill(self) -> None:
        self.server.popen.send_signal(signal.SIGKILL)
        self.server.popen.wait(timeout=10)
        self.server.stop()  # closes its stdout

    async def listening(self, limit: float = 60.0) -> float:
        """perf_counter when 014's port accepts a TCP connection, polled every 5 ms."""
        deadline = time.perf_counter() + limit
        while time.perf_counter() < deadline:
            try:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", self.port), 1.0
                )
            except (OSError, TimeoutError):
                await asyncio.sleep(0.005)
                continue
            at = time.perf_counter()
            writer.close()
            return at
        raise RuntimeError(f"bank {ISSUER} did not listen on {self.port} within {limit} s")


def _hub_argv(members: Path, flags: tuple[str, ...]) -> list[str]:
    return cli_argv("hub", "--members", str(members), "--port", "0", "--ready-line",
                "--log-level", "WARNING", *flags)  # fmt: skip


def _summary(stream: Stream, since: float, until: float | None) -> tuple[dict[str, int], Any]:
    window = [a for a in stream.answers if a.done > since and (until is None or a.done <= until)]
    fast = [a.seconds for a in window if a.outcome == _OPEN]
    p50 = round(statistics.median(fast) * 1000, 1) if fast else None
    return dict(Counter(a.outcome for a in window).most_common()), p50


async def measure(
    work: Path, *, restarts: int, down: float, rate: float = 20.0, limit: float = 20.0
) -> list[Restart]:
    """`restarts` kills and restarts of the banks, each hub's restart-to-first-OK measured."""
    banks = Banks(work)
    hubs: dict[str, Server] = {}
    streams: dict[str, Stream] = {}
    tasks: list[asyncio.Task[None]] = []
    try:
        members = work / "members.toml"
        write_members(members, banks.server.ready)
        bank = next(b for b in banks.server.ready["banks"] if b["code"] == ISSUER)
        qrs = [s["qr_text"] for s in bank["samples"]]
        started_hubs = await asyncio.gather(
            *(
                asyncio.to_thread(
                    start_server, f"hub-{name}", _hub_argv(members, flags), work / f"{name}.log"
                )
                for name, flags in HUBS.items()
            ),
            return_exceptions=True,
        )
        for name, hub in zip(HUBS, started_hubs, strict=True):
            if isinstance(hub, Server):
                hubs[name] = hub
        if failed := [h for h in started_hubs if isinstance(h, BaseException)]:
            raise failed[0]
        streams = {name: Stream(hub.address, qrs, rate) for name, hub in hubs.items()}
        tasks = [asyncio.create_task(s.run()) for s in streams.values()]
        results = []
        for n in range(1, restarts + 1):
            await _until(lambda: all(s.steady() for s in streams.values()), limit, "steady")
            banks.kill()
            killed = time.perf_counter()
            await asyncio.sleep(down)
            started = asyncio.create_task(asyncio.to_thread(banks.start))
            listened = await banks.listening()
            banks.server = await started
            await _until(
                lambda at=listened: all(s.first_ok_after(at) for s in streams.values()),
                limit,
                "first OK",
                fail=False,
            )
            restart = Restart(n, round(listened - killed, 3), {})
            for name, stream in streams.items():
                ok = stream.first_ok_after(listened)
                restart.to_first_ok_s[name] = None if ok is None else round(ok - listened, 3)
                restart.answers[name], restart.fail_fast_p50_ms[name] = _summary(stream, killed, ok)
            results.append(restart)
        return results
    finally:
        for task in tasks:
            task.cancel()
        for stream in streams.values():
            await stream.close()
        for hub in hubs.values():
            hub.popen.terminate()  # all at once: each drains for a second
        for hub in hubs.values():
            hub.stop()
        banks.server.stop()


async def _until(ready: Any, limit: float, what: str, *, fail: bool = True) -> None:
    deadline = time.perf_counter() + limit
    while not ready():
        if time.perf_counter() > deadline:
            if fail:
                raise RuntimeError(f"not {what} within {limit} s")
            return
        await asyncio.sleep(0.01)
