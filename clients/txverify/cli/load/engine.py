"""The load engine: load processes, each an event loop sending its share of the plan (open
loop on a schedule, or closed loop), their tallies merged into one LoadResult."""

from __future__ import annotations

import asyncio
import itertools
import math
import multiprocessing as mp
import os
import queue
import random
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import grpc
from hdrh.histogram import HdrHistogram  # type: ignore[import-untyped]

from txverify import miniqr
from txverify.cli.failures import HUB
from txverify.cli.load import buckets
from txverify.cli.load.judge import (
    FIRST_USE_KINDS,
    SETTLES_KINDS,
    FirstUses,
    expected_of,
    judge_answer,
    judge_error,
)
from txverify.cli.load.plan import LoadError, LoadPlan, Share, Unreachable
from txverify.cli.load.results import MAX_EXAMPLES, LoadResult, Tally, new_histogram
from txverify.cli.load.schedule import RATE
from txverify.client.channels import hub_aio_channel
from txverify.errors import details_of
from txverify.v1 import verification_pb2, verification_pb2_grpc
from txverify.wire import MEMBER_HEADER

STARTUP_TIMEOUT = 60.0
PROGRESS_INTERVAL = 0.25
STAGE_TICK = 0.05  # seconds: how often a closed-loop stage's callers are counted again
# Statuses the client library makes up itself, without ErrorInfo: who ended the request.
CLIENT_SIDE = {
    "DEADLINE_EXCEEDED": "timed_out",
    "CANCELLED": "cancelled",
    "UNAVAILABLE": "not_sent",
}


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
        self.of = share.of  # load processes in all: a closed-loop stage's callers are split
        self.schedule = self.plan.schedule()
        self.staged = bool(self.plan.stages)
        self.stage_histograms: dict[int, HdrHistogram] = {}
        self.rows = open(share.csv, "w", encoding="utf-8") if share.csv else None  # noqa: SIM115
        self.round = share.round

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

    async def one(self, scheduled: float, *, lagging: bool = False) -> None:
        """One request, its latency counted from `scheduled` (its planned send time); with
        `lagging` (open loop), how late it was sent is counted too."""
        kind, qr = self._next()
        self.seq += 1
        request_id = f"{self.plan.run_id}-{self.index}-{self.seq}"
        request = verification_pb2.VerifyRequest(
            qr_text=qr, request_id=request_id, requester_reference=self.reference
        )
        slip = self._slip(qr) if kind in FIRST_USE_KINDS | SETTLES_KINDS else None
        key = f"{slip.sending_bank}:{slip.trans_ref}" if slip else qr
        answered_before = self.uses.send(key) if kind in FIRST_USE_KINDS else 0
        stub = self.stubs[self.seq % len(self.stubs)]
        sent = time.perf_counter()
        self.tally.count_send(int(sent - self.t0), (sent - scheduled) * 1e6 if lagging else None)
        origin = "answered"
        try:
            response = await stub.Verify(request, timeout=self.plan.timeout, metadata=self.metadata)
        except grpc.aio.AioRpcError as error:
            d = details_of(error)
            outcome = f"{d.status.name}/{d.reason}" if d.reason else d.status.name
            judged = judge_error(kind, outcome) if self.plan.check else "failed"
            detail = d.message
            if not d.reason:  # no ErrorInfo: the hub did not send this status (README)
                origin = CLIENT_SIDE.get(d.status.name, "transport")
        else:
            verdict = verification_pb2.Verdict.Name(response.verdict).removeprefix("VERDICT_")
            outcome = f"OK/{verdict}"
            detail = judge_answer(kind, response, request_id, slip) if self.plan.check else ""
            genuine = verdict in ("VALID", "DUPLICATE")
            if self.plan.check and not detail and genuine and kind in FIRST_USE_KINDS:
                exclusive = kind not in self.shared
                detail = self.uses.judge(key, verdict, answered_before, exclusive=exclusive)
            judged = "wrong" if detail else "ok"
        done = time.perf_counter()
        latency_us = max(1, round((done - scheduled) * 1e6))
        self.histogram.record_value(min(latency_us, self.histogram.highest_trackable_value))
        self.tally.outcomes[kind, outcome] += 1
        self.tally.client[origin] += 1
        self.tally.count(int(done - self.t0), latency_us, outcome, error=judged != "ok")
        buckets.record(self.tally.by_kind.setdefault(kind, {}), latency_us)
        if self.staged:
            self._count_stage(self.schedule.stage_at(scheduled - self.t0), latency_us, judged)
        if self.rows is not None:
            at, took = scheduled - self.t0, latency_us / 1000
            self.rows.write(
                f"{self.round},{self.index},{self.seq},{request_id},{kind},{at:.6f},"
                f"{sent - self.t0:.6f},{took:.3f},{outcome},{judged},{origin}\n"
            )
        if judged != "ok":
            counts = self.tally.wrong if judged == "wrong" else self.tally.failed
            counts[kind, outcome] += 1
            if counts[kind, outcome] == 1 and len(self.tally.examples) < MAX_EXAMPLES:
                example = {"class": judged, "kind": kind, "qr": qr, "request_id": request_id}
                example |= {"expected": expected_of(kind), "got": outcome, "detail": detail}
                self.tally.examples.append(example)

    def _count_stage(self, stage: int, latency_us: int, judged: str) -> None:
        h = self.stage_histograms.setdefault(stage, new_histogram())
        h.record_value(min(latency_us, h.highest_trackable_value))
        counts = self.tally.stage_counts
        counts[stage, "requests"] += 1
        counts[stage, "errors"] += judged != "ok"
        counts[stage, "wrong"] += judged == "wrong"

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
        if self.plan.rate or (self.schedule.unit == RATE and self.staged):
            await self._open_loop()
        elif self.staged:
            await self._closed_stages()
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
        self.tally.stage_histograms = {i: h.encode() for i, h in self.stage_histograms.items()}
        if self.rows is not None:
            self.rows.close()
        return self.tally

    async def _open_loop(self) -> None:
        """Sends on a fixed schedule whatever the answers do: no coordinated omission."""
        if self.staged or self.plan.duration:
            times: Iterator[float] = self.schedule.send_times()
        else:  # --requests alone: as many as asked, at the rate
            times = (i / self.plan.rate for i in itertools.count())
        tasks: set[asyncio.Task[None]] = set()
        for i, offset in enumerate(times):
            if not self._more(i, scheduled := self.t0 + offset):
                break
            if (wait := scheduled - time.perf_counter()) > 0:
                await asyncio.sleep(wait)
            elif i % 64 == 0:
                await asyncio.sleep(0)  # late: catch up, but let answers in now and then
            self.tally.send_lag_max = max(self.tally.send_lag_max, time.perf_counter() - scheduled)
            task = asyncio.create_task(self.one(scheduled, lagging=True))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)

    async def _closed_stages(self) -> None:
        """Closed loop with --concurrency-stage: callers join and leave as the target moves
        (this process's part of it); a caller leaves after its request in flight."""
        issued, callers = 0, dict[int, asyncio.Task[None]]()

        def wanted() -> int:
            total = round(self.schedule.target_at(time.perf_counter() - self.t0))
            return total // self.of + (self.index < total % self.of)

        async def caller(n: int) -> None:
            nonlocal issued
            while n < wanted() and self._more(issued, time.perf_counter()):
                issued += 1
                await self.one(time.perf_counter())

        while self._more(issued, time.perf_counter()):
            for n in range(wanted()):
                if n not in callers or callers[n].done():
                    callers[n] = asyncio.create_task(caller(n))
            await asyncio.sleep(STAGE_TICK)
        await asyncio.gather(*callers.values())


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
    started, interrupted = time.monotonic(), False
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
                interrupted = True
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
    result = LoadResult.merge(
        plan.settings(),
        [tallies[i] for i in sorted(tallies)],
        plan.schedule() if plan.stages else None,
    )
    result.offered = plan.offered(result.total.elapsed)
    result.interrupted = interrupted
    return result
