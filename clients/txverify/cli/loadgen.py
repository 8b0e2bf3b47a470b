"""`txverify load`: drive the hub with a mix of slips, open or closed loop, and check every answer.

Kinds of slips and the answer each must get (anything else is a wrong answer,
except UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED and CANCELLED, which
are counted as "no answer"):

- valid, duplicate: OK with the transaction of that very slip, the request's own
  request_id and, since every run verifies under its own requester_reference
  (`load-RUNID`), verdict VALID at the slip's first use in the run and
  DUPLICATE at every later use. `valid` walks through many slips (mostly VALID),
  `duplicate` reuses a few (mostly DUPLICATE). A reversed transfer's slip is
  MISMATCH (its STATUS check fails), which is right too.
- notfound NOT_FOUND/SLIP_NOT_FOUND, expired NOT_FOUND/SLIP_EXPIRED,
  bad INVALID_ARGUMENT/INVALID_SLIP_QR, unknownissuer NOT_FOUND/ISSUER_NOT_FOUND.

Each load process owns its share of the valid and duplicate slips, so it alone
knows whether a use is the first; with fewer slips than processes they are
shared and only VALID is checked against the process's own uses.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing as mp
import os
import queue
import random
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any, Protocol

import grpc

from txverify import miniqr
from txverify.cli.failures import HUB, SIMULATOR, failure_line, unreachable_cause
from txverify.cli.loadreport import (
    MAX_EXAMPLES,
    LoadResult,
    Tally,
    new_histogram,
)
from txverify.client.channels import control_channel, hub_aio_channel
from txverify.errors import details_of
from txverify.v1 import common_pb2, verification_pb2, verification_pb2_grpc
from txverify.wire import MEMBER_HEADER

KINDS = ("valid", "duplicate", "notfound", "expired", "bad", "unknownissuer")
FIRST_USE_KINDS = frozenset({"valid", "duplicate"})
EXPECTED_ERRORS = {
    "notfound": "NOT_FOUND/SLIP_NOT_FOUND",
    "expired": "NOT_FOUND/SLIP_EXPIRED",
    "bad": "INVALID_ARGUMENT/INVALID_SLIP_QR",
    "unknownissuer": "NOT_FOUND/ISSUER_NOT_FOUND",
}
NO_ANSWER = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "CANCELLED"})
DEFAULT_MIX = "valid=80,duplicate=5,notfound=5,expired=4,bad=4,unknownissuer=2"
DUPLICATE_SLIPS_PER_PROCESS = 4
STARTUP_TIMEOUT = 60.0
PROGRESS_INTERVAL = 0.25


class LoadError(RuntimeError):
    """The load could not run: bad plan, no slips, hub unreachable; the message says which.

    exit_code: what `txverify load` exits with: 2 for bad input (as typer's own for
    bad flags), 4 when the hub or the simulator does not answer, else 1.
    """

    exit_code = 1


class BadInput(LoadError):
    """A flag, the mix or the slips file is wrong: nothing was sent."""

    exit_code = 2


class Unreachable(LoadError):
    """The hub or the simulator did not answer: nothing was measured."""

    exit_code = 4


def parse_mix(text: str) -> tuple[tuple[str, int], ...]:
    """Weights by kind from KIND=WEIGHT,...: "valid=80,bad=20" -> (("valid", 80), ("bad", 20))."""
    mix: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        kind, _, weight = part.partition("=")
        if kind.strip() not in KINDS or not weight.strip().isdigit():
            raise BadInput(f"mix: {part!r} is not KIND=WEIGHT with KIND one of {', '.join(KINDS)}")
        mix[kind.strip()] = int(weight)
    if not sum(mix.values()):
        raise BadInput("mix: the weights add up to 0")
    return tuple((k, w) for k, w in mix.items() if w)


def read_slips(path: Path) -> dict[str, list[str]]:
    """A `txverify slips export --kinds` file: KIND<TAB>QR per line (malformed = bad)."""
    pools: dict[str, list[str]] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"--slips {path}: {exc}") from None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        kind, tab, qr = line.strip().partition("\t")
        kind = "bad" if kind == "malformed" else kind
        if not tab or kind not in KINDS:
            raise BadInput(f"{path}:{n}: expected KIND<TAB>QR with KIND one of {', '.join(KINDS)}")
        pools.setdefault(kind, []).append(qr.strip())
    return pools


def fetch_slips(
    control: str, generated: int = 1000, *, certs: Path | None = None
) -> dict[str, list[str]]:
    """Slips of every kind from the simulated banks (BankSimulator at `control`; over
    mTLS with the operator's or QA's certificate from `certs`)."""
    from txverify.cli.simulatorcmd import _break, _not_found, _round_robin, _unknown, iter_slips
    from txverify.v1 import simulator_pb2, simulator_pb2_grpc

    visible, expired = simulator_pb2.SLIP_STATE_VISIBLE, simulator_pb2.SLIP_STATE_EXPIRED
    valid: dict[str, list[str]] = {}
    old: dict[str, list[str]] = {}
    try:
        with control_channel(control, certs=certs) as channel:
            stub: Any = simulator_pb2_grpc.BankSimulatorStub(channel)
            banks = [
                b.code for b in stub.ListBanks(simulator_pb2.ListBanksRequest(), timeout=10).banks
            ]
            for bank in banks:
                for s in iter_slips(stub, bank):
                    completed = s.transaction.status == common_pb2.TRANSACTION_STATUS_COMPLETED
                    if s.state == visible and completed:
                        valid.setdefault(bank, []).append(s.qr_text)
                    elif s.state == expired:
                        old.setdefault(bank, []).append(s.qr_text)
    except grpc.RpcError as error:
        d = details_of(error)
        line = failure_line(d, control, SIMULATOR, markup=False)
        raise (Unreachable if unreachable_cause(d) else LoadError)(line) from None
    except OSError as exc:  # a certificate or key file missing or unreadable
        raise BadInput(f"certificates in {certs}: {exc}") from None
    ok = _round_robin(valid, sum(map(len, valid.values())))
    return {
        "valid": ok,
        "expired": _round_robin(old, sum(map(len, old.values()))),
        "notfound": _not_found(banks, generated),
        "bad": [_break(ok[i % len(ok)], i) for i in range(generated)] if ok else [],
        "unknownissuer": [_unknown(i) for i in range(generated // 10)],
    }


def _settle_pools(
    pools: Mapping[str, tuple[str, ...]], mix: Mapping[str, int], procs: int
) -> dict[str, tuple[str, ...]]:
    """Without duplicate slips of their own, a few valid ones (some per process) become them."""
    settled = {k: tuple(dict.fromkeys(v)) for k, v in pools.items()}  # each QR once, in order
    valid = settled.get("valid", ())
    if mix.get("duplicate") and not settled.get("duplicate") and valid:
        spare = len(valid) - (len(valid) // 2 if mix.get("valid") else 0)
        n = max(1, min(DUPLICATE_SLIPS_PER_PROCESS * procs, spare))
        settled["duplicate"] = valid[-n:]
    duplicates = set(settled.get("duplicate", ()))
    settled["valid"] = tuple(q for q in valid if q not in duplicates)
    return settled


class _Flags(Protocol):  # read-only: a frozen LoadPlan, or the flags before one is made
    @property
    def rate(self) -> float: ...
    @property
    def duration(self) -> float | None: ...
    @property
    def requests(self) -> int | None: ...
    @property
    def concurrency(self) -> int: ...
    @property
    def connections(self) -> int: ...
    @property
    def procs(self) -> int: ...
    @property
    def timeout(self) -> float: ...
    @property
    def member(self) -> str: ...


def flag_problems(f: _Flags) -> list[str]:
    """What is wrong with the flags of a load, each a sentence; [] when nothing."""
    problems = [
        "--rate must not be negative" if f.rate < 0 else "",
        "give --duration or --requests" if not (f.duration or f.requests) else "",
        "--concurrency must be at least --procs" if not f.rate and f.concurrency < f.procs else "",
        "--requests must be at least --procs"
        if f.requests is not None and f.requests < f.procs
        else "",
        "--connections and --procs must be at least 1" if min(f.connections, f.procs) < 1 else "",
        "--timeout must be positive" if f.timeout <= 0 else "",
        "no member to speak for: give --member" if not f.member else "",
    ]
    return [p for p in problems if p]


@dataclass(frozen=True)
class LoadPlan:
    """What to send, how hard, for how long, to which hub as which member."""

    # (flag_problems checks the fields that flags set: also before any slip is fetched.)

    hub: str
    member: str
    pools: Mapping[str, tuple[str, ...]]  # kind -> QR texts
    mix: tuple[tuple[str, int], ...] = (("valid", 80), ("notfound", 10), ("bad", 10))
    rate: float = 0.0  # > 0: open loop, requests/s; else closed loop
    concurrency: int = 16  # closed loop: requests in flight
    duration: float | None = 10.0
    requests: int | None = None  # stop after this many (and/or after `duration`)
    connections: int = 1
    procs: int = 1
    certs: Path | None = None  # mTLS with `member`'s certificate from this directory
    timeout: float = 10.0
    # False: any OK answer counts as right (benchmarks against servers that are
    # not the hub, e.g. bench/yardstick.py); errors still count as failed.
    check: bool = True
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    def __post_init__(self) -> None:
        # Frozen, but the pools are settled once here: duplicates set apart from the valid slips.
        object.__setattr__(self, "pools", _settle_pools(self.pools, dict(self.mix), self.procs))
        problems = flag_problems(self)
        problems += [
            f"the mix asks for {k} slips but there are none"
            for k, _ in self.mix
            if not self.pools.get(k)
        ]
        if problems := [p for p in problems if p]:
            raise BadInput("; ".join(problems))

    def settings(self) -> dict[str, Any]:
        return {
            "hub": self.hub,
            "member": self.member,
            "mtls": self.certs is not None,
            "mode": "open" if self.rate else "closed",
            "rate": self.rate,
            "concurrency": None if self.rate else self.concurrency,
            "duration": self.duration,
            "requests": self.requests,
            "connections": max(self.connections, self.procs),  # at least one per process
            "procs": self.procs,
            "mix": dict(self.mix),
            "timeout": self.timeout,
            "check": self.check,
            "run_id": self.run_id,
            "slips": {k: len(v) for k, v in self.pools.items()},
        }

    def shares(self) -> list[Share]:
        """One plan per process: its part of the rate, concurrency, requests, connections, slips."""
        pools = self.pools

        def part(total: int, i: int) -> int:
            return total // self.procs + (i < total % self.procs)

        shares = []
        for i in range(self.procs):
            mine = {k: v[i :: self.procs] if len(v) >= self.procs else v for k, v in pools.items()}
            shared = frozenset(k for k, v in pools.items() if len(v) < self.procs)
            plan = replace(
                self,
                pools=mine,
                rate=self.rate / self.procs,
                concurrency=max(1, part(self.concurrency, i)),
                requests=None if self.requests is None else part(self.requests, i),
                connections=max(1, part(self.connections, i)),
                procs=1,
            )
            shares.append(Share(plan, i, shared))
        return shares


@dataclass(frozen=True)
class Share:
    """One load process's part of a plan; `shared` kinds have slips other processes use too."""

    plan: LoadPlan
    index: int
    shared: frozenset[str] = frozenset()


class FirstUses:
    """Judges VALID against DUPLICATE for the slips of one process: VALID only at a first use."""

    def __init__(self) -> None:
        self.sent: Counter[str] = Counter()
        self.answered: Counter[str] = Counter()
        self.valid: Counter[str] = Counter()

    def send(self, key: str) -> int:
        """Before a request: returns how many answers about this slip had come back."""
        self.sent[key] += 1
        return self.answered[key]

    def judge(self, key: str, verdict: str, answered_before: int, *, exclusive: bool) -> str:
        """What is wrong with this verdict ("" if nothing).

        DUPLICATE needs only another request for the slip, answered or not: one
        that timed out may still have counted a use. With shared slips another
        process may have used the slip first, so any DUPLICATE may be right.
        """
        self.answered[key] += 1
        if verdict == "VALID":
            self.valid[key] += 1
            first = answered_before == 0 and self.valid[key] == 1
            return "" if first else "VALID although the slip was verified before in this run"
        if exclusive and self.sent[key] < 2:
            return "DUPLICATE at the slip's first use in this run"
        return ""


def judge_answer(
    kind: str,
    response: verification_pb2.VerifyResponse,
    request_id: str,
    slip: miniqr.SlipRef | None,
) -> str:
    """What is wrong with an OK answer, short of VALID/DUPLICATE ("" if nothing)."""
    verdict = verification_pb2.Verdict.Name(response.verdict).removeprefix("VERDICT_")
    tx = response.transaction
    if kind not in FIRST_USE_KINDS:
        return f"answered OK/{verdict}"
    if response.request_id != request_id:
        return f"request_id {response.request_id!r} is not the request's"
    if response.replayed:
        return "replayed an answer to a new request id"
    if slip is None or (tx.sending_bank, tx.trans_ref) != (slip.sending_bank, slip.trans_ref):
        return f"answered about {tx.sending_bank} {tx.trans_ref}"
    if verdict == "MISMATCH" and tx.status == common_pb2.TRANSACTION_STATUS_REVERSED:
        return ""  # a reversed transfer: genuine, but its STATUS check fails
    return "" if verdict in ("VALID", "DUPLICATE") else f"verdict {verdict}"


def judge_error(kind: str, outcome: str) -> str:
    """How an error outcome ("STATUS/REASON") counts: "ok", "wrong" or "failed" (no answer)."""
    if EXPECTED_ERRORS.get(kind) == outcome:
        return "ok"
    return "failed" if outcome.partition("/")[0] in NO_ANSWER else "wrong"


def expected_of(kind: str) -> str:
    return EXPECTED_ERRORS.get(kind, "OK/VALID at the slip's first use in the run, then DUPLICATE")


def aio_hub_channel(hub: str, *, certs: Path | None, identity: str) -> grpc.aio.Channel:
    """txverify.client.channels.hub_aio_channel (mTLS as `identity` with `certs`, accepting only the
    hub's certificate; else plaintext), each channel with a TCP connection of its own."""
    # A local subchannel pool: channels to one target would otherwise share one
    # subchannel, i.e. one TCP connection, and --connections would mean nothing.
    options = (("grpc.use_local_subchannel_pool", 1),)
    return hub_aio_channel(hub, certs=certs, identity=identity, options=options)


class Runner:
    """One process's load: sends, times and judges requests, and tallies what it saw."""

    def __init__(self, share: Share, stubs: list[Any]) -> None:
        self.plan, self.index, self.stubs = share.plan, share.index, stubs
        self.shared = share.shared
        weights = dict(self.plan.mix)
        gcd = math.gcd(*weights.values())
        self.cycle = [k for k, w in weights.items() for _ in range(w // gcd)]
        random.Random(share.index).shuffle(self.cycle)
        self.picked: Counter[str] = Counter()
        self.slips: dict[str, miniqr.SlipRef | None] = {}
        self.uses = FirstUses()
        self.tally, self.histogram = Tally(), new_histogram()
        self.metadata = ((MEMBER_HEADER, self.plan.member),)
        self.reference = f"load-{self.plan.run_id}"
        self.seq = 0
        self.stopping = False
        self.t0 = time.perf_counter()

    def _next(self) -> tuple[str, str]:
        kind = self.cycle[self.seq % len(self.cycle)]
        pool = self.plan.pools[kind]
        self.picked[kind] += 1
        return kind, pool[(self.picked[kind] - 1) % len(pool)]

    def _slip(self, qr: str) -> miniqr.SlipRef | None:
        if qr not in self.slips:
            try:
                self.slips[qr] = miniqr.parse(qr)
            except miniqr.InvalidSlipQR:
                self.slips[qr] = None
        return self.slips[qr]

    async def one(self, scheduled: float) -> None:
        """One request, its latency counted from `scheduled` (its planned send time)."""
        kind, qr = self._next()
        self.seq += 1
        request_id = f"{self.plan.run_id}-{self.index}-{self.seq}"
        request = verification_pb2.VerifyRequest(
            qr_text=qr, request_id=request_id, requester_reference=self.reference
        )
        slip = self._slip(qr) if kind in FIRST_USE_KINDS else None
        key = f"{slip.sending_bank}:{slip.trans_ref}" if slip else qr
        answered_before = self.uses.send(key) if kind in FIRST_USE_KINDS else 0
        stub = self.stubs[self.seq % len(self.stubs)]
        try:
            response = await stub.Verify(request, timeout=self.plan.timeout, metadata=self.metadata)
        except grpc.aio.AioRpcError as error:
            d = details_of(error)
            outcome = f"{d.status.name}/{d.reason}" if d.reason else d.status.name
            judged = judge_error(kind, outcome) if self.plan.check else "failed"
            detail = d.message
        else:
            verdict = verification_pb2.Verdict.Name(response.verdict).removeprefix("VERDICT_")
            outcome = f"OK/{verdict}"
            detail = judge_answer(kind, response, request_id, slip) if self.plan.check else ""
            if self.plan.check and not detail and verdict in ("VALID", "DUPLICATE"):
                exclusive = kind not in self.shared
                detail = self.uses.judge(key, verdict, answered_before, exclusive=exclusive)
            judged = "wrong" if detail else "ok"
        done = time.perf_counter()
        latency_us = max(1, round((done - scheduled) * 1e6))
        self.histogram.record_value(min(latency_us, self.histogram.highest_trackable_value))
        self.tally.outcomes[kind, outcome] += 1
        self.tally.count(int(done - self.t0), latency_us, error=judged != "ok")
        if judged != "ok":
            counts = self.tally.wrong if judged == "wrong" else self.tally.failed
            counts[kind, outcome] += 1
            if counts[kind, outcome] == 1 and len(self.tally.examples) < MAX_EXAMPLES:
                example = {"class": judged, "kind": kind, "qr": qr, "request_id": request_id}
                example |= {"expected": expected_of(kind), "got": outcome, "detail": detail}
                self.tally.examples.append(example)

    def _more(self, issued: int, at: float) -> bool:
        plan = self.plan
        return (
            not self.stopping
            and (plan.requests is None or issued < plan.requests)
            and (not plan.duration or at < self.t0 + plan.duration)
        )

    async def run(self) -> Tally:
        self.t0 = time.perf_counter()
        cpu0 = _cpu_seconds()
        if self.plan.rate:
            await self._open_loop()
        else:
            issued = 0

            async def worker() -> None:
                nonlocal issued
                while self._more(issued, time.perf_counter()):
                    issued += 1
                    await self.one(time.perf_counter())

            await asyncio.gather(*(worker() for _ in range(self.plan.concurrency)))
        self.tally.elapsed = time.perf_counter() - self.t0
        self.tally.cpu_seconds = _cpu_seconds() - cpu0
        self.tally.histogram = self.histogram.encode()
        return self.tally

    async def _open_loop(self) -> None:
        """Sends on a fixed schedule whatever the answers do: no coordinated omission."""
        interval = 1 / self.plan.rate
        tasks: set[asyncio.Task[None]] = set()
        i = 0
        while self._more(i, scheduled := self.t0 + i * interval):
            if (wait := scheduled - time.perf_counter()) > 0:
                await asyncio.sleep(wait)
            elif i % 64 == 0:
                await asyncio.sleep(0)  # late: catch up, but let answers in now and then
            self.tally.send_lag_max = max(self.tally.send_lag_max, time.perf_counter() - scheduled)
            task = asyncio.create_task(self.one(scheduled))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
        if tasks:
            await asyncio.gather(*tasks)


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


async def _run_share(share: Share, messages: Any, go: Event, stop: Event) -> Tally:
    plan = share.plan
    channels = [
        aio_hub_channel(plan.hub, certs=plan.certs, identity=plan.member)
        for _ in range(plan.connections)
    ]
    try:
        try:
            ready = asyncio.gather(*(c.channel_ready() for c in channels))
            await asyncio.wait_for(ready, timeout=10)
        except TimeoutError:
            raise Unreachable(
                f"no hub answers at {plan.hub} (not connected in 10 s): {HUB[2]}"
            ) from None
        messages.put(("ready", share.index))
        if not await asyncio.to_thread(_wait_for_go, go, stop):
            raise LoadError("the run was called off before it started")
        runner = Runner(share, [verification_pb2_grpc.VerificationServiceStub(c) for c in channels])

        async def watch() -> None:
            while True:
                await asyncio.sleep(PROGRESS_INTERVAL)
                runner.stopping = runner.stopping or stop.is_set()
                t = runner.tally
                messages.put(("progress", share.index, sum(t.completed), sum(t.errors)))

        watcher = asyncio.create_task(watch())
        try:
            return await runner.run()
        finally:
            watcher.cancel()
    finally:
        for channel in channels:
            await channel.close()


def _wait_for_go(go: Event, stop: Event) -> bool:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not go.wait(0.1):
        if stop.is_set() or time.monotonic() > deadline:
            return False
    return True


def _process_main(share: Share, messages: Any, go: Event, stop: Event) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches us as `stop`, from the parent
    try:
        tally = asyncio.run(_run_share(share, messages, go, stop))
    except Exception as exc:
        code = exc.exit_code if isinstance(exc, LoadError) else 1
        messages.put(("failed", share.index, f"load process {share.index}: {exc}", code))
        return
    messages.put(("done", share.index, tally))


def run_load(plan: LoadPlan, on_progress: Callable[[int, int], None] | None = None) -> LoadResult:
    """Run the plan in `plan.procs` spawned processes, started together; merge their tallies.

    `on_progress(answers, errors)` is called a few times a second. Ctrl-C stops
    sending; requests in flight finish and the result covers what was sent.
    """
    ctx = mp.get_context("spawn")
    messages = ctx.Queue()
    go, stop = ctx.Event(), ctx.Event()
    shares = plan.shares()
    procs = [
        ctx.Process(target=_process_main, args=(s, messages, go, stop), name=f"load-{s.index}")
        for s in shares
    ]
    for p in procs:
        p.start()
    tallies: dict[int, Tally] = {}
    progress: dict[int, tuple[int, int]] = {}
    ready: set[int] = set()
    started = time.monotonic()
    try:
        while len(tallies) < len(procs):
            try:
                message = messages.get(timeout=0.2)
            except queue.Empty:
                if not go.is_set() and time.monotonic() - started > STARTUP_TIMEOUT:
                    raise LoadError("the load processes did not start in time") from None
                gone = [
                    i for i, p in enumerate(procs) if p.exitcode is not None and i not in tallies
                ]
                if gone and messages.empty():
                    time.sleep(0.5)  # its last message may still be in the pipe
                    if messages.empty():
                        raise LoadError(f"load process {gone[0]} exited") from None
                continue
            except KeyboardInterrupt:
                stop.set()
                continue
            what, index, *rest = message
            if what == "ready":
                ready.add(index)
                if len(ready) == len(procs):
                    go.set()
            elif what == "progress":
                progress[index] = rest[0], rest[1]
                if on_progress is not None:
                    on_progress(*map(sum, zip(*progress.values(), strict=True)))
            elif what == "done":
                tallies[index] = rest[0]
            else:
                failed = LoadError(rest[0])
                failed.exit_code = rest[1]
                raise failed
    finally:
        stop.set()
        messages.close()
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join()
    return LoadResult.merge(plan.settings(), [tallies[i] for i in sorted(tallies)])
