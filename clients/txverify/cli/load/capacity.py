"""`txverify load --find-capacity`: the highest open-loop rate the hub sustains within bounds.

Steps of `--step-seconds` each, open loop: from `--start-rate`, times `--growth` after
every step that met the bounds (p99 at most `--max-p99`, errors at most `--max-errors`,
throughput at least 95 % of the offered rate), until one does not; then `--refine`
steps halve the gap between the last rate that passed and the first that failed. The
answer is the highest rate that passed, with every step's p50/p99 against the offered
rate: the curve a load tester draws by hand from many runs.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from txverify.cli.load.plan import BadInput, LoadPlan
from txverify.cli.load.results import LoadResult
from txverify.cli.load.schedule import RATE, Schedule, Stage

MIN_THROUGHPUT = 0.95  # of the offered rate: below it the hub (or the client) fell behind
PAUSE = 1.0  # seconds between steps: a backlog of the step before drains first


@dataclass(frozen=True, slots=True)
class Search:
    start_rate: float = 50.0
    max_rate: float = 20_000.0
    growth: float = 1.5
    refine: int = 2
    step_seconds: float = 10.0
    max_p99_ms: float = 50.0
    max_error_rate: float = 0.01  # a share of requests, 0.01 = 1 %

    def problems(self) -> list[str]:
        checks = [
            (self.start_rate > 0, "--start-rate must be positive"),
            (self.max_rate >= self.start_rate, "--max-rate must be at least --start-rate"),
            (self.growth > 1, "--growth must be above 1"),
            (self.refine >= 0, "--refine must not be negative"),
            (self.step_seconds >= 1, "--step-seconds must be at least 1"),
            (self.max_p99_ms > 0, "--max-p99 must be positive"),
            (0 <= self.max_error_rate <= 1, "--max-errors must be a share from 0% to 100%"),
        ]
        return [message for ok, message in checks if not ok]


@dataclass(frozen=True, slots=True)
class Step:
    offered: float
    result: LoadResult
    failed_bound: str  # "" when it passed; else p99, errors or throughput

    def to_json(self) -> dict[str, Any]:
        f = self.result.figures()
        return {
            "offered_rps": round(self.offered, 1),
            "throughput_rps": round(f.throughput, 1),
            "requests": f.requests,
            "p50_ms": round(f.latency_us(50) / 1000, 3),
            "p90_ms": round(f.latency_us(90) / 1000, 3),
            "p99_ms": round(f.latency_us(99) / 1000, 3),
            "error_rate": round(f.error_rate, 6),
            "passed": not self.failed_bound,
            "failed_bound": self.failed_bound,
        }


def failed_bound(search: Search, offered: float, result: LoadResult) -> str:
    f = result.figures()
    if f.error_rate > search.max_error_rate:
        return "errors"
    if f.latency_us(99) / 1000 > search.max_p99_ms:
        return "p99"
    if f.throughput < MIN_THROUGHPUT * offered:
        return "throughput"
    return ""


def find_capacity(
    plan: LoadPlan,
    search: Search,
    run: Callable[[LoadPlan], LoadResult],
    on_step: Callable[[Step], None] = lambda step: None,
) -> LoadResult:
    """Run the steps (each with `run`); the result holds them all, each as a stage."""
    if problems := search.problems():
        raise BadInput("; ".join(problems))
    steps: list[Step] = []

    def step(rate: float) -> bool:
        if steps:
            time.sleep(PAUSE)
        fresh = replace(
            plan, rate=rate, duration=search.step_seconds, requests=None, stages=(),
            run_id=uuid.uuid4().hex[:12],  # each step's first uses are its own
        )  # fmt: skip
        result = run(fresh)
        steps.append(Step(rate, result, failed_bound(search, rate, result)))
        on_step(steps[-1])
        if result.interrupted:  # Ctrl-C: no more steps; what ran is reported
            raise _Interrupted
        return not steps[-1].failed_bound

    good: float | None = None
    try:
        good = _search(step, search)
    except _Interrupted:
        passed = [s.offered for s in steps if not s.failed_bound]
        good = max(passed) if passed else None
    return _combined(steps, search, good)


class _Interrupted(Exception):
    pass


def _search(step: Callable[[float], bool], search: Search) -> float | None:
    """Up by `growth` until a step fails, then halving the gap; the highest rate passed."""
    good, bad, rate = None, None, search.start_rate
    while step(rate):
        good = rate
        if rate >= search.max_rate:
            break
        rate = min(rate * search.growth, search.max_rate)
    else:
        bad = rate
    for _ in range(search.refine):
        if good is None or bad is None:
            break
        middle = (good + bad) / 2
        if step(middle):
            good = middle
        else:
            bad = middle
    return good


def _combined(steps: list[Step], search: Search, sustained: float | None) -> LoadResult:
    result = LoadResult.concat([s.result for s in steps], as_stages=True)
    result.schedule = Schedule(
        tuple(Stage(float(s.result.seconds), s.offered, s.offered) for s in steps), RATE
    )
    failures = [s.failed_bound for s in steps if s.failed_bound]
    result.settings = {**result.settings, "rate": None, "find_capacity": asdict(search)}
    result.capacity = {
        "bounds": _bounds(search),
        "sustained_rps": None if sustained is None else round(sustained, 1),
        "limit": "interrupted" if result.interrupted else failures[0] if failures else "max-rate",
        "steps": [s.to_json() for s in steps],
    }
    return result


def _bounds(search: Search) -> dict[str, float]:
    return {"p99_ms": search.max_p99_ms, "error_rate": search.max_error_rate}
