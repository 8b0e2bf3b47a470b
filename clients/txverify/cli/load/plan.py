"""A load plan: what to send, how hard, for how long; checked whole before anything is sent
(BadInput, exit 2), and split into one share per load process."""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from txverify.cli.load.schedule import RATE, Schedule, Stage

# pending is not in the default mix: only a bank with a pending window has such slips.
KINDS = ("valid", "duplicate", "notfound", "expired", "pending", "bad", "unknownissuer")
DEFAULT_MIX = "valid=80,duplicate=5,notfound=5,expired=4,bad=4,unknownissuer=2"
DUPLICATE_SLIPS_PER_PROCESS = 4


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
        "--concurrency must be at least --procs"
        if not f.rate and not getattr(f, "stages", ()) and f.concurrency < f.procs
        else "",
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
    # --stage / --concurrency-stage: the target over time (then `duration` is theirs).
    stages: tuple[Stage, ...] = ()
    stage_unit: str = RATE
    requests_csv: Path | None = None  # --csv-requests: each process writes REQUESTS_CSV.partN
    round: int = 1  # with --rounds N, which one this is (in the per-request rows)

    def schedule(self) -> Schedule:
        """The stages chained, else the constant rate for `duration` (open loop)."""
        if self.stages:
            return Schedule.of(self.stages, self.stage_unit)
        return Schedule.constant(self.rate, self.duration or 0.0)

    def offered(self, elapsed: float) -> list[float] | None:
        """Requests asked for in each second of an open-loop run (None for a closed loop)."""
        if not (self.rate or (self.stages and self.stage_unit == RATE)):
            return None
        schedule = self.schedule()
        if not self.stages and not self.duration:  # --requests alone, at the rate
            schedule = Schedule.constant(self.rate, (self.requests or 0) / self.rate)
        return [schedule.offered(i) for i in range(math.ceil(max(elapsed, schedule.duration)))]

    def __post_init__(self) -> None:
        if self.stages:  # the stages say how long; chained here so a bad one fails now
            object.__setattr__(self, "duration", Schedule.of(self.stages, self.stage_unit).duration)
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
            "mode": "open" if self.rate or (self.stages and self.stage_unit == RATE) else "closed",
            "rate": None if self.stages else self.rate,
            "concurrency": None if self.rate or self.stages else self.concurrency,
            "duration": self.duration,
            "requests": self.requests,
            "connections": max(self.connections, self.procs),  # at least one per process
            "procs": self.procs,
            "mix": dict(self.mix),
            "timeout": self.timeout,
            "check": self.check,
            "run_id": self.run_id,
            "slips": {k: len(v) for k, v in self.pools.items()},
            "stages": [{"duration_s": s.duration, "target": s.target} for s in self.stages],
            "stage_unit": self.stage_unit if self.stages else None,
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
            stages = self.stages
            if self.stage_unit == RATE:  # a rate splits; callers are split as they come
                stages = tuple(Stage(s.duration, s.target / self.procs) for s in stages)
            plan = replace(
                self,
                pools=mine,
                stages=stages,
                rate=self.rate / self.procs,
                concurrency=max(1, part(self.concurrency, i)),
                requests=None if self.requests is None else part(self.requests, i),
                connections=max(1, part(self.connections, i)),
                procs=1,
            )
            csv = f"{self.requests_csv}.part{i}" if self.requests_csv else None
            shares.append(Share(plan, i, shared, of=self.procs, csv=csv, round=self.round))
        return shares


@dataclass(frozen=True)
class Share:
    """One load process's part of a plan; `shared` kinds have slips other processes use too."""

    plan: LoadPlan
    index: int
    shared: frozenset[str] = frozenset()
    of: int = 1  # load processes in all
    csv: str | None = None  # where this process writes its per-request rows
    round: int = 1
