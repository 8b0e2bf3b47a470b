"""Soak: one hub (every feature on) under an open loop at a fraction of its measured capacity,
its memory, open descriptors and errors sampled all along; fails on growth beyond set bounds.

    python bench/soak.py [--seconds 600] [--interval 10] [--load 0.7] [--report soak-report.json]
    make soak           # 10 minutes at 70% of capacity

Processes, all on loopback: the simulated banks 002 and 014 (`txverify banks`)
and the hub (`txverify hub`: identity, membership, rate limit set never to
refuse, QR decoding, duplicates, idempotency, durable audit in a file SQLite
database, metrics, its log line per RPC), both started as bench/harness.py
starts them. The capacity is the throughput of a closed loop of the load
generator (clients/txverify/cli/load/engine.py: 2 processes, 8 HTTP/2 connections, 64 in
flight) for --capacity-seconds, unless --rate is given; then an open loop at
--load x capacity for --seconds, with a mix of slip kinds and every answer
checked (a wrong answer or no answer is an error). Every --interval seconds:
the hub's and the banks' RSS, open file descriptors (/proc/PID/fd, summed over
each process tree) and threads, and the answers and errors so far (the load
generator's progress callback). Writes a JSON report (--report) and exits 1,
the reasons printed, when errors exceed --max-errors, when the hub's RSS or
descriptors grow by more than --max-rss-growth-mb / --max-fd-growth from the
first sample after --warmup to the last one under load, or when the answers
within the sending window fall below --min-rate-ratio of the target rate.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "bench")]

from harness import BANKS, REQUESTER, machine  # noqa: E402
from txverify.cli.faultlab.processes import (  # noqa: E402
    Server,
    process_tree,
    start_banks,
    start_server,
    status_kb,
)
from txverify.cli.load.engine import PROGRESS_INTERVAL, run_load  # noqa: E402
from txverify.cli.load.plan import DEFAULT_MIX, LoadPlan, parse_mix  # noqa: E402
from txverify.cli.load.results import LoadResult  # noqa: E402
from txverify.cli.load.slips import fetch_slips  # noqa: E402
from txverify.cli.network import cli_argv  # noqa: E402


def _fds(pid: int) -> int:
    """Open file descriptors of `pid` and its descendants."""
    total = 0
    for p in process_tree(pid):
        with contextlib.suppress(OSError):
            total += len(os.listdir(f"/proc/{p}/fd"))
    return total


def _threads(pid: int) -> int:
    return sum(status_kb(p, "Threads") for p in process_tree(pid))


@dataclass(frozen=True)
class Sample:
    t: float  # seconds since the load started sending
    hub_rss_mb: float
    hub_fds: int
    hub_threads: int
    banks_rss_mb: float
    banks_fds: int
    answers: int  # so far, every kind
    errors: int  # so far: wrong answers and requests without an answer
    rps: float  # answers a second since the previous sample


class Sampler:
    """Samples the processes every `interval` s while the load sends (from its first progress
    until `seconds`, so every sample sees the load's connections open), in a thread."""

    def __init__(self, hub: Server, banks: Server, interval: float, seconds: float) -> None:
        self.hub, self.banks = hub, banks
        self.interval, self.seconds = interval, seconds
        self.counts = (0, 0)
        self.t0 = 0.0
        self.samples: list[Sample] = []
        self.started, self.done = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._loop, name="sampler", daemon=True)

    def progress(self, answers: int, errors: int) -> None:
        """run_load's callback (cumulative counts over all load processes)."""
        self.counts = (answers, errors)
        if not self.started.is_set():
            self.t0 = time.monotonic() - PROGRESS_INTERVAL  # the processes began one tick ago
            self.started.set()

    def take(self, t: float, answers: int, errors: int) -> Sample:
        before = self.samples[-1] if self.samples else None
        dt = t - before.t if before else 0.0
        return Sample(
            t=round(t, 1),
            hub_rss_mb=round(self.hub.rss_mb(), 1),
            hub_fds=_fds(self.hub.popen.pid),
            hub_threads=_threads(self.hub.popen.pid),
            banks_rss_mb=round(self.banks.rss_mb(), 1),
            banks_fds=_fds(self.banks.popen.pid),
            answers=answers,
            errors=errors,
            rps=round((answers - before.answers) / dt, 1) if before and dt > 0 else 0.0,
        )

    def _loop(self) -> None:
        while not self.started.wait(0.1):
            if self.done.is_set():
                return
        k = 0
        while k * self.interval < self.seconds and not self.done.wait(
            max(0.0, self.t0 + k * self.interval - time.monotonic())
        ):
            sample = self.take(time.monotonic() - self.t0, *self.counts)
            self.samples.append(sample)
            print(_line(sample), flush=True)
            k += 1


HEADER = (
    f"{'t s':>7} {'hub MB':>7} {'fds':>4} {'thr':>4} {'banks MB':>8} {'fds':>4} "
    f"{'answers':>9} {'errors':>6} {'req/s':>7}"
)


def _line(s: Sample) -> str:
    return (
        f"{s.t:>7.1f} {s.hub_rss_mb:>7.1f} {s.hub_fds:>4} {s.hub_threads:>4} "
        f"{s.banks_rss_mb:>8.1f} {s.banks_fds:>4} {s.answers:>9,} {s.errors:>6,} {s.rps:>7.0f}"
    )


class Soak:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args, self.tmp = args, tmp
        self.banks: Server | None = None
        self.hub: Server | None = None
        self.pools: dict[str, tuple[str, ...]] = {}

    def start(self) -> None:
        a = self.args
        self.banks, members = start_banks(
            self.tmp, "--codes", BANKS, "--transactions", str(a.transactions),
            "--log-level", "WARNING",
        )  # fmt: skip
        ready = self.banks.ready
        self.pools = {k: tuple(v) for k, v in fetch_slips(ready["control"]).items()}
        self.hub = start_server(
            "hub",
            cli_argv("hub", "--members", str(members), "--port", "0", "--ready-line",
                 "--db", f"sqlite:///{self.tmp / 'hub.sqlite'}", "--metrics-port", "0",
                 "--rate-limit-rps", "1000000", "--rate-limit-burst", "100000", *a.hub_arg),
            self.tmp / "hub.log",
        )  # fmt: skip

    def stop(self) -> None:
        for server in (self.hub, self.banks):
            if server is not None:
                server.stop()

    def plan(self, *, rate: float, seconds: float) -> LoadPlan:
        a = self.args
        assert self.hub is not None
        return LoadPlan(
            hub=self.hub.address,
            member=REQUESTER,
            pools=self.pools,
            mix=parse_mix(a.mix),
            rate=rate,
            concurrency=a.concurrency,
            duration=seconds,
            connections=a.connections,
            procs=a.procs,
            check=True,
        )

    def capacity(self) -> LoadResult:
        return run_load(self.plan(rate=0.0, seconds=self.args.capacity_seconds))

    def soak(self, rate: float) -> tuple[LoadResult, Sampler]:
        assert self.hub is not None
        assert self.banks is not None
        sampler = Sampler(self.hub, self.banks, self.args.interval, self.args.seconds)
        sampler.thread.start()
        try:
            result = run_load(self.plan(rate=rate, seconds=self.args.seconds), sampler.progress)
        finally:
            sampler.done.set()
            sampler.thread.join()
        return result, sampler


def _errors(result: LoadResult) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for (kind, outcome), n in (result.total.wrong + result.total.failed).items():
        counts[f"{kind}/{outcome}"] += n
    return dict(counts)


def _load_figures(result: LoadResult, seconds: float) -> dict[str, Any]:
    """A load run's figures; "rps_in_window": answers in the whole seconds it was sending (all
    `seconds` unless stopped early), so that the drain of a backlog after the end does not count."""
    elapsed = result.total.elapsed
    window = int(seconds) if elapsed >= 0.99 * seconds else int(elapsed)
    in_window = sum(result.total.completed[:window])
    return {
        "requests": result.requests,
        "errors": result.wrong_count + result.failed_count,
        "errors_by_kind": _errors(result),
        "seconds": round(result.total.elapsed, 2),
        "rps": round(result.throughput, 1),
        "rps_in_window": round(in_window / window, 1) if window else 0.0,
        "p50_ms": result.latency_us(50) / 1000,
        "p99_ms": result.latency_us(99) / 1000,
        "p999_ms": result.latency_us(99.9) / 1000,
        "send_lag_max_s": round(result.total.send_lag_max, 3),
        "load_cpu_s": round(result.total.cpu_seconds, 1),
        "slips": result.settings["slips"],
        "outcomes": {f"{k}/{o}": n for (k, o), n in sorted(result.total.outcomes.items())},
    }


def verdict(
    a: argparse.Namespace,
    target: float,
    capacity: dict[str, Any] | None,
    load: dict[str, Any],
    samples: list[Sample],
    hub_alive: bool,
) -> tuple[dict[str, Any], list[str]]:
    """Growth from the first sample after the warm-up to the last, and what fails the soak."""
    reasons = []
    errors = load["errors"] + (capacity["errors"] if capacity else 0)
    if errors > a.max_errors:
        kinds = {**(capacity["errors_by_kind"] if capacity else {}), **load["errors_by_kind"]}
        reasons.append(f"errors: {errors} > --max-errors {a.max_errors} ({kinds})")
    warm = [s for s in samples if s.t >= a.warmup]
    growth: dict[str, Any] = {}
    if len(warm) < 2:
        reasons.append(f"samples: {len(warm)} after the {a.warmup:g} s warm-up, need 2")
    else:
        first, last = warm[0], warm[-1]
        growth = {
            "from_t": first.t,
            "to_t": last.t,
            "hub_rss_mb": round(last.hub_rss_mb - first.hub_rss_mb, 1),
            "hub_fds": last.hub_fds - first.hub_fds,
            "hub_threads": last.hub_threads - first.hub_threads,
            "banks_rss_mb": round(last.banks_rss_mb - first.banks_rss_mb, 1),
            "banks_fds": last.banks_fds - first.banks_fds,
        }
        if growth["hub_rss_mb"] > a.max_rss_growth_mb:
            reasons.append(
                f"hub RSS: {first.hub_rss_mb} -> {last.hub_rss_mb} MB "
                f"(+{growth['hub_rss_mb']} > --max-rss-growth-mb {a.max_rss_growth_mb:g})"
            )
        if growth["hub_fds"] > a.max_fd_growth:
            reasons.append(
                f"hub open descriptors: {first.hub_fds} -> {last.hub_fds} "
                f"(+{growth['hub_fds']} > --max-fd-growth {a.max_fd_growth})"
            )
    if load["rps_in_window"] < a.min_rate_ratio * target:
        reasons.append(
            f"rate: {load['rps_in_window']:.0f} answers/s < {a.min_rate_ratio:g} x target "
            f"{target:.0f}/s (the load's latest send was {load['send_lag_max_s']} s late)"
        )
    if load["seconds"] < 0.99 * a.seconds:
        reasons.append(f"stopped early: the load ran {load['seconds']} s of {a.seconds:g} s")
    if not hub_alive:
        reasons.append("the hub exited during the soak")
    return growth, reasons


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--seconds", type=float, default=600.0, help="open loop, seconds (default 600)")
    add("--interval", type=float, default=10.0, help="seconds between samples (default 10)")
    add("--load", type=float, default=0.7, help="fraction of the capacity (default 0.7)")
    add("--rate", type=float, default=0.0, help="requests/s; skips the capacity measurement")
    add("--capacity-seconds", type=float, default=5.0, help="closed loop (default 5)")
    add("--warmup", type=float, help="seconds not judged (default 10%% of --seconds, >= interval)")
    add("--max-errors", type=int, default=0, help="wrong or unanswered requests (default 0)")
    add("--max-rss-growth-mb", type=float, default=32.0, help="hub RSS growth (default 32)")
    add("--max-fd-growth", type=int, default=8, help="hub open descriptors growth (default 8)")
    add("--min-rate-ratio", type=float, default=0.9, help="answers/s over target (default 0.9)")
    add("--mix", default=DEFAULT_MIX, help=f"slip kinds, KIND=WEIGHT,... (default {DEFAULT_MIX})")
    add("--procs", type=int, default=2, help="load generator processes (default 2)")
    add("--connections", type=int, default=8, help="HTTP/2 connections in all (default 8)")
    add("--concurrency", type=int, default=64, help="capacity: in flight in all (default 64)")
    add("--transactions", type=int, default=2000, help="per simulated bank (default 2000)")
    add("--hub-arg", action="append", default=[], help="extra `txverify hub` argument (repeat)")
    add("--report", type=Path, default=Path("soak-report.json"))
    args = parser.parse_args()
    if args.seconds < 1 or args.interval <= 0 or args.load <= 0 or args.rate < 0:
        parser.error("--seconds >= 1, --interval > 0, --load > 0 and --rate >= 0, please")
    if args.warmup is None:
        args.warmup = max(args.interval, 0.1 * args.seconds)
    return args


def main() -> int:
    a = parse_args()
    info = machine()
    print(json.dumps(info), flush=True)
    capacity: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="txverify-soak-") as tmpdir:
        soak = Soak(a, Path(tmpdir))
        try:
            soak.start()
            assert soak.hub is not None
            if not a.rate:
                print(f"capacity: closed loop, {a.concurrency} in flight, {a.capacity_seconds:g} s")
                capacity = _load_figures(soak.capacity(), a.capacity_seconds)
                if capacity["seconds"] < 0.99 * a.capacity_seconds:  # Ctrl-C stops run_load
                    raise SystemExit("soak: the capacity measurement was stopped")
                print(
                    f"capacity: {capacity['rps']:.0f} req/s (p50 {capacity['p50_ms']:.1f} ms, "
                    f"{capacity['errors']} errors)",
                    flush=True,
                )
            target = a.load * capacity["rps"] if capacity else a.rate
            if target <= 0:
                raise SystemExit("soak: no capacity measured (no answers in the closed loop)")
            print(f"soak: open loop at {target:.0f} req/s for {a.seconds:g} s, answers checked")
            print(HEADER, flush=True)
            result, sampler = soak.soak(target)
            load = _load_figures(result, a.seconds)
            hub_alive = soak.hub.popen.poll() is None
            time.sleep(1.0)  # the load's connections close; then the idle figures
            after = sampler.take(time.monotonic() - sampler.t0, load["requests"], load["errors"])
        finally:
            soak.stop()
    growth, reasons = verdict(a, target, capacity, load, sampler.samples, hub_alive)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()}
    report = {
        "machine": info,
        "settings": settings,
        "capacity": capacity,
        "target_rps": round(target, 1),
        "load": load,
        "samples": [asdict(s) for s in sampler.samples],
        "after_load": asdict(after),
        "growth": growth,
        "verdict": {"passed": not reasons, "reasons": reasons},
    }
    a.report.write_text(json.dumps(report, indent=2) + "\n")
    print_summary(report)
    print(f"soak {'passed' if not reasons else 'FAILED'}; written: {a.report}")
    return 1 if reasons else 0


def print_summary(report: dict[str, Any]) -> None:
    load, growth, after = report["load"], report["growth"], report["after_load"]
    print()
    print(
        f"load: {load['requests']:,} requests in {load['seconds']} s, "
        f"{load['rps_in_window']:.0f}/s answered while sending "
        f"(target {report['target_rps']:.0f}/s), p50 {load['p50_ms']:.1f} ms, "
        f"p99 {load['p99_ms']:.1f} ms, {load['errors']} errors"
    )
    if growth:
        print(
            f"growth {growth['from_t']:g} s -> {growth['to_t']:g} s: hub RSS "
            f"{growth['hub_rss_mb']:+.1f} MB, fds {growth['hub_fds']:+d}, threads "
            f"{growth['hub_threads']:+d}; banks RSS {growth['banks_rss_mb']:+.1f} MB, "
            f"fds {growth['banks_fds']:+d}"
        )
    print(f"after the load (idle): hub {after['hub_rss_mb']} MB, {after['hub_fds']} fds")
    for reason in report["verdict"]["reasons"]:
        print(f"  FAILED {reason}")


if __name__ == "__main__":
    sys.exit(main())
