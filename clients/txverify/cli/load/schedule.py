"""Stages of load: `--stage 30s:100 --stage 60s:1000 --stage 30s:0`, as k6 reads its stages.

Each stage moves the target linearly from where the previous stage ended (0 before the
first) to its own target over its duration: `30s:100` ramps 0 -> 100 in 30 s, and the
next `60s:100` holds 100. A stage of `0s` jumps (`--stage 0s:100 --stage 60s:100` is a
step to 100 held for a minute). The target is a rate (requests/s, open loop) or a number
of callers (closed loop), by the flag that gave the stages.

The open loop sends at the times the schedule asks for: the k-th request when the
integral of the rate reaches k, so the offered rate follows the ramp exactly and no
answer can delay a send (no coordinated omission).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

RATE, CONCURRENCY = "rate", "concurrency"
_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)(ms|s|m|h))", re.IGNORECASE)
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class ScheduleError(ValueError):
    """A stage is written wrong; the message names it and shows the form."""


def parse_duration(text: str) -> float:
    """Seconds from `90`, `90s`, `1m30s`, `500ms`, `1h`."""
    given = text.strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", given):
        return float(given)
    parts = _DURATION.findall(given)
    if not parts or "".join(n + u for n, u in parts).lower() != given.lower():
        raise ScheduleError(f"{text!r} is not a duration such as 30s, 1m30s or 500ms")
    return sum(float(n) * _SECONDS[u.lower()] for n, u in parts)


@dataclass(frozen=True, slots=True)
class Stage:
    """A stretch of the schedule: the target moves from `start` to `target` in `duration` s."""

    duration: float
    target: float
    start: float = 0.0

    def at(self, t: float) -> float:
        """The target `t` seconds into this stage."""
        if self.duration <= 0:
            return self.target
        return self.start + (self.target - self.start) * min(max(t / self.duration, 0.0), 1.0)

    def count(self, t: float) -> float:
        """Requests the stage asks for in its first `t` seconds (a rate stage): the area."""
        t = min(max(t, 0.0), self.duration)
        return self.start * t + (self.at(t) - self.start) * t / 2


def parse_stage(text: str, unit: str = RATE) -> Stage:
    """`30s:100` -> Stage(30.0, 100.0); the start is filled in by Schedule."""
    duration, colon, target = text.partition(":")
    flag = "--stage" if unit == RATE else "--concurrency-stage"
    form = f"{flag} DURATION:TARGET, e.g. 30s:100"
    if not colon:
        raise ScheduleError(f"{flag} {text!r}: expected {form}")
    try:
        seconds = parse_duration(duration)
        value = float(target)
    except (ScheduleError, ValueError):
        raise ScheduleError(f"{flag} {text!r}: expected {form}") from None
    if not math.isfinite(value) or value < 0 or (unit == CONCURRENCY and value != int(value)):
        kind = "a whole number of callers" if unit == CONCURRENCY else "a rate in requests/s"
        raise ScheduleError(f"{flag} {text!r}: the target must be {kind}, at least 0")
    return Stage(seconds, value)


@dataclass(frozen=True, slots=True)
class Schedule:
    """Stages one after another, each starting where the one before ended."""

    stages: tuple[Stage, ...]
    unit: str = RATE

    @classmethod
    def of(cls, stages: Sequence[Stage], unit: str = RATE) -> Schedule:
        chained, level = [], 0.0
        for s in stages:
            chained.append(Stage(s.duration, s.target, level))
            level = s.target
        if not chained or sum(s.duration for s in chained) <= 0:
            raise ScheduleError("the stages add up to no time: give at least one longer than 0s")
        return cls(tuple(chained), unit)

    @classmethod
    def constant(cls, rate: float, duration: float) -> Schedule:
        return cls((Stage(duration, rate, rate),), RATE)

    @property
    def duration(self) -> float:
        return sum(s.duration for s in self.stages)

    def bounds(self) -> list[tuple[float, float]]:
        """(start, end) seconds of every stage."""
        out, t = [], 0.0
        for s in self.stages:
            out.append((t, t + s.duration))
            t += s.duration
        return out

    def stage_at(self, t: float) -> int:
        """The index of the stage running `t` seconds in (the last one after the end)."""
        end = 0.0
        for i, s in enumerate(self.stages):  # per request: no list made
            end += s.duration
            if t < end:
                return i
        return len(self.stages) - 1

    def target_at(self, t: float) -> float:
        for stage, (start, end) in zip(self.stages, self.bounds(), strict=True):
            if t < end:
                return stage.at(t - start)
        return self.stages[-1].target

    def scaled(self, factor: float) -> Schedule:
        """Every target times `factor`: one load process's part of the rate."""
        stages = tuple(Stage(s.duration, s.target * factor, s.start * factor) for s in self.stages)
        return Schedule(stages, self.unit)

    def offered(self, second: int) -> float:
        """Requests a rate schedule asks for in second `second` (from `second` to `second+1`)."""
        return self.count(second + 1) - self.count(second)

    def count(self, t: float) -> float:
        total = 0.0
        for stage, (start, _) in zip(self.stages, self.bounds(), strict=True):
            total += stage.count(t - start)
        return total

    def send_times(self) -> Iterator[float]:
        """Seconds from the start at which a rate schedule sends: the k-th request (from 1)
        when `count` reaches k, solved per stage; ends with the schedule."""
        done = 0.0  # requests asked for by the stages before this one
        for stage, (start, _) in zip(self.stages, self.bounds(), strict=True):
            total = stage.count(stage.duration)
            k = math.floor(done) + 1
            while k - done <= total + 1e-9:
                yield start + _solve(stage, k - done)
                k += 1
            done += total


def _solve(stage: Stage, n: float) -> float:
    """The time into `stage` at which its count reaches `n`: r0 t + (r1 - r0) t^2 / 2D = n."""
    r0, slope = stage.start, (stage.target - stage.start) / stage.duration
    if abs(slope) < 1e-12:
        return n / r0 if r0 > 0 else stage.duration
    # The root of slope/2 t^2 + r0 t - n = 0 in [0, D], written to avoid cancellation.
    root = math.sqrt(max(r0 * r0 + 2 * slope * n, 0.0))
    return min(2 * n / (r0 + root), stage.duration) if r0 + root > 0 else stage.duration
