"""Two load reports compared figure by figure, B against A; with rounds in both, a verdict
only where B is beyond A's round-to-round spread. Also reading a report file."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

BETTER = "B better"
WORSE = "B worse"
WITHIN = "within spread"
# The settings that make two loads alike; a difference in any is warned of.
COMPARED_SETTINGS = ("mix", "rate", "concurrency", "duration", "procs")
MS_PER_US = 0.001

Report = Mapping[str, Any]
Getter = Callable[[Report], float | None]


class ReportError(ValueError):
    """A file that is not a load report; the message names the file and says why."""


@dataclass(frozen=True)
class Figure:
    """One figure of both runs; spreads (min, max of the rounds) and verdict with rounds."""

    name: str
    unit: str  # "req/s", "ms", "%", or "" (a count)
    better: str  # "higher", "lower", or "" (neither: an outcome's share)
    a: float
    b: float
    spread_a: tuple[float, float] | None = None
    spread_b: tuple[float, float] | None = None
    verdict: str | None = None

    @property
    def change(self) -> float:
        return self.b - self.a

    @property
    def relative(self) -> float | None:
        """The change in % of A; None when A is 0."""
        return self.change / abs(self.a) * 100 if self.a else None

    @property
    def improved(self) -> bool | None:
        """Whether B moved the better way; None when unchanged or neither way is better."""
        if not self.better or not self.change:
            return None
        return (self.change > 0) == (self.better == "higher")


@dataclass(frozen=True)
class SettingDifference:
    name: str
    a: Any
    b: Any


@dataclass(frozen=True)
class Comparison:
    figures: tuple[Figure, ...]
    rounds_a: int
    rounds_b: int
    differences: tuple[SettingDifference, ...] = ()

    @property
    def judged(self) -> bool:
        return any(f.verdict for f in self.figures)

    @property
    def worse(self) -> bool:
        return any(f.verdict == WORSE for f in self.figures)


@dataclass(frozen=True)
class _Measure:
    name: str
    unit: str
    better: str
    of_run: Getter
    of_round: Getter | None = None  # None: the rounds do not carry this figure


def _at(report: Any, *keys: str) -> float | None:
    """The number at report[k1][k2]...; None when a key is missing or not a number."""
    for key in keys:
        report = report.get(key) if isinstance(report, Mapping) else None
    if isinstance(report, bool) or not isinstance(report, int | float):
        return None
    return float(report)


def _field(*keys: str, scale: float = 1.0) -> Getter:
    def get(report: Report) -> float | None:
        value = _at(report, *keys)
        return None if value is None else value * scale

    return get


def _error_rate(report: Report) -> float | None:
    errors, requests = _at(report, "errors"), _at(report, "requests")
    return None if errors is None or not requests else errors / requests * 100


def _round_error_rate(report: Report) -> float | None:
    rate = _at(report, "error_rate")  # a fraction
    return _error_rate(report) if rate is None else rate * 100


def _share(outcome: str) -> Getter:
    def get(report: Report) -> float | None:
        counts = _outcomes(report)
        total = sum(counts.values())
        return counts.get(outcome, 0.0) / total * 100 if total else None

    return get


def _outcomes(report: Report) -> dict[str, float]:
    outcomes = report.get("outcomes")
    if not isinstance(outcomes, Mapping):
        return {}
    return {str(k): v for k in outcomes if (v := _at(outcomes, k)) is not None}


def _latency(name: str, *, in_rounds: bool) -> _Measure:
    get = _field("latency_us", name, scale=MS_PER_US)
    return _Measure(name, "ms", "lower", get, get if in_rounds else None)


MEASURES = (
    _Measure("throughput", "req/s", "higher", _field("throughput_rps"), _field("throughput_rps")),
    _latency("p50", in_rounds=True),
    _latency("p90", in_rounds=True),
    _latency("p99", in_rounds=True),
    _latency("p99.9", in_rounds=False),
    _latency("mean", in_rounds=True),
    _latency("max", in_rounds=False),
    _Measure("error rate", "%", "lower", _error_rate, _round_error_rate),
    _Measure("wrong answers", "", "lower", _field("wrong_answers", "count")),
)


def verdict(rounds_a: Sequence[float], rounds_b: Sequence[float], higher_is_better: bool) -> str:
    """BETTER or WORSE when every round of B is beyond every round of A, else WITHIN."""
    if len(rounds_a) < 2 or len(rounds_b) < 2:
        raise ValueError("a verdict needs at least 2 rounds of each run")
    if min(rounds_b) > max(rounds_a):
        return BETTER if higher_is_better else WORSE
    if max(rounds_b) < min(rounds_a):
        return WORSE if higher_is_better else BETTER
    return WITHIN


def rounds_of(report: Report) -> list[Report]:
    rounds = report.get("rounds")
    return [r for r in rounds if isinstance(r, Mapping)] if isinstance(rounds, list) else []


def _per_round(get: Getter, rounds: Sequence[Report]) -> list[float] | None:
    values = [get(r) for r in rounds]
    return None if None in values else [v for v in values if v is not None]


def _figure(m: _Measure, a: Report, b: Report) -> Figure | None:
    value_a, value_b = m.of_run(a), m.of_run(b)
    if value_a is None or value_b is None:
        return None
    figure = Figure(m.name, m.unit, m.better, value_a, value_b)
    rounds_a, rounds_b = rounds_of(a), rounds_of(b)
    if m.of_round is None or min(len(rounds_a), len(rounds_b)) < 2:
        return figure
    per_a, per_b = _per_round(m.of_round, rounds_a), _per_round(m.of_round, rounds_b)
    if per_a is None or per_b is None:
        return figure
    return replace(
        figure,
        spread_a=(min(per_a), max(per_a)),
        spread_b=(min(per_b), max(per_b)),
        verdict=verdict(per_a, per_b, m.better == "higher"),
    )


def setting_differences(a: Report, b: Report) -> tuple[SettingDifference, ...]:
    """The COMPARED_SETTINGS that both runs record and that differ."""
    sa, sb = a.get("settings"), b.get("settings")
    if not isinstance(sa, Mapping) or not isinstance(sb, Mapping):
        return ()
    return tuple(
        SettingDifference(k, sa[k], sb[k])
        for k in COMPARED_SETTINGS
        if k in sa and k in sb and sa[k] != sb[k]
    )


def compare(a: Report, b: Report) -> Comparison:
    """B against A on every figure both reports have; outcome shares over both runs' outcomes."""
    outcomes = sorted(set(_outcomes(a)) | set(_outcomes(b)))
    shares = [_Measure(f"{o} share", "%", "", _share(o)) for o in outcomes]
    figures = (_figure(m, a, b) for m in (*MEASURES, *shares))
    return Comparison(
        figures=tuple(f for f in figures if f is not None),
        rounds_a=len(rounds_of(a)),
        rounds_b=len(rounds_of(b)),
        differences=setting_differences(a, b),
    )


# --- reading a report ---


def read_report(path: Path) -> dict[str, Any]:
    """The report in a `txverify load --json` file, or ReportError saying why it is not one."""
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise ReportError(f"{path}: no such file") from None
    except OSError as exc:
        raise ReportError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise ReportError(f"{path}: not JSON ({exc})") from None
    if not isinstance(data, dict) or _at(data, "throughput_rps") is None:
        raise ReportError(f"{path}: not a txverify load report (no throughput_rps)")
    return data
