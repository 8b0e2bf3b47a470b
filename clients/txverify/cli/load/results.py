"""The result of a load run: tallies of the load processes merged, and as JSON."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram  # type: ignore[import-untyped]

# Latencies are recorded in microseconds, 1 µs to 60 s, at 3 significant digits (0.1 %).
LOWEST_US = 1
HIGHEST_US = 60_000_000
SIGNIFICANT_FIGURES = 3
PERCENTILES = (50.0, 90.0, 99.0, 99.9)
MAX_EXAMPLES = 10


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_FIGURES)


def _grow(values: list[int], second: int) -> None:
    values.extend([0] * (second + 1 - len(values)))


@dataclass
class Tally:
    """What one load process saw; the tallies of all processes add up to a LoadResult."""

    histogram: bytes = b""  # HdrHistogram.encode() of every answer's latency in µs
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)  # (kind, outcome)
    wrong: Counter[tuple[str, str]] = field(default_factory=Counter)  # answered, but not so
    failed: Counter[tuple[str, str]] = field(default_factory=Counter)  # not answered in time
    examples: list[dict[str, str]] = field(default_factory=list)
    completed: list[int] = field(default_factory=list)  # per second since the start
    errors: list[int] = field(default_factory=list)  # wrong or failed, per second
    latency_sum_us: list[int] = field(default_factory=list)  # per second
    elapsed: float = 0.0
    cpu_seconds: float = 0.0
    send_lag_max: float = 0.0  # open loop: how late the latest send was against its schedule

    def count(self, second: int, latency_us: int, *, error: bool) -> None:
        for values in (self.completed, self.errors, self.latency_sum_us):
            _grow(values, second)
        self.completed[second] += 1
        self.errors[second] += error
        self.latency_sum_us[second] += latency_us


def _add(total: list[int], part: Sequence[int]) -> None:
    _grow(total, len(part) - 1)
    for i, value in enumerate(part):
        total[i] += value


@dataclass
class LoadResult:
    """A whole run: histograms merged with HdrHistogram.add, counts summed."""

    settings: dict[str, Any]
    histogram: HdrHistogram = field(default_factory=new_histogram)
    total: Tally = field(default_factory=Tally)  # every count; its `histogram` stays empty
    processes: int = 0

    @classmethod
    def merge(cls, settings: dict[str, Any], tallies: Iterable[Tally]) -> LoadResult:
        result = cls(settings)
        t = result.total
        for part in tallies:
            result.processes += 1
            if part.histogram:
                result.histogram.add(HdrHistogram.decode(part.histogram))
            t.outcomes += part.outcomes
            t.wrong += part.wrong
            t.failed += part.failed
            t.examples += part.examples
            for total, values in (
                (t.completed, part.completed),
                (t.errors, part.errors),
                (t.latency_sum_us, part.latency_sum_us),
            ):
                _add(total, values)
            t.elapsed = max(t.elapsed, part.elapsed)
            t.cpu_seconds += part.cpu_seconds
            t.send_lag_max = max(t.send_lag_max, part.send_lag_max)
        # One example per kind and outcome, wrong answers first.
        unique = {(e["class"], e["kind"], e["got"]): e for e in reversed(t.examples)}
        t.examples = sorted(unique.values(), key=lambda e: e["class"] != "wrong")[:MAX_EXAMPLES]
        return result

    @property
    def requests(self) -> int:
        return sum(self.total.outcomes.values())

    @property
    def wrong_count(self) -> int:
        return sum(self.total.wrong.values())

    @property
    def failed_count(self) -> int:
        return sum(self.total.failed.values())

    @property
    def throughput(self) -> float:
        return self.requests / self.total.elapsed if self.total.elapsed > 0 else 0.0

    @property
    def exit_code(self) -> int:
        """1 when an answer was wrong, else 4 when some requests got no answer, else 0."""
        return 1 if self.wrong_count else 4 if self.failed_count else 0

    def latency_us(self, percentile: float) -> int:
        value: int = self.histogram.get_value_at_percentile(percentile)
        return value

    def percentile_curve(self) -> list[tuple[float, int]]:
        """(percentile, latency µs) from 0 % to 99.999 % spaced by nines, then 100 % (the max)."""
        if not self.requests:
            return []
        curve = [(100.0 * (1 - 10 ** (-i / 10)), 0) for i in range(51)]
        curve = [(p, self.latency_us(p)) for p, _ in curve]
        return [*curve, (100.0, int(self.histogram.get_max_value()))]


def _by(counts: Counter[tuple[str, str]], part: int) -> dict[str, int]:
    out: Counter[str] = Counter()
    for key, n in counts.items():
        out[key[part]] += n
    return dict(sorted(out.items()))


def _nested(counts: Counter[tuple[str, str]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for (kind, outcome), n in sorted(counts.items()):
        out.setdefault(kind, {})[outcome] = n
    return out


def to_json(result: LoadResult) -> dict[str, Any]:
    """The report as JSON-ready data, with the per-second timeline and the percentile curve."""
    t = result.total
    outcomes = _by(t.outcomes, 1)
    statuses: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for outcome, n in outcomes.items():
        status, _, reason = outcome.partition("/")
        statuses[status] += n
        reasons[reason or status] += n
    latency = {f"p{p:g}": result.latency_us(p) for p in PERCENTILES}
    return {
        "settings": result.settings,
        "processes": result.processes,
        "requests": result.requests,
        "elapsed_s": round(t.elapsed, 3),
        "throughput_rps": round(result.throughput, 1),
        "latency_us": {
            **latency,
            "max": int(result.histogram.get_max_value()) if result.requests else 0,
            "min": int(result.histogram.get_min_value()) if result.requests else 0,
            "mean": round(result.histogram.get_mean_value(), 1) if result.requests else 0,
        },
        "outcomes": outcomes,
        "by_status": dict(sorted(statuses.items())),
        "by_reason": dict(sorted(reasons.items())),
        "by_kind": _nested(t.outcomes),
        "errors": result.wrong_count + result.failed_count,
        "wrong_answers": {"count": result.wrong_count, "by_kind": _nested(t.wrong)},
        "failed": {"count": result.failed_count, "by_kind": _nested(t.failed)},
        "examples": t.examples,
        "client_cpu_s": round(t.cpu_seconds, 3),
        "send_lag_max_ms": round(t.send_lag_max * 1000, 3),
        "exit_code": result.exit_code,
        "timeline": [
            {
                "second": i,
                "completed": n,
                "errors": t.errors[i],
                "mean_latency_ms": round(t.latency_sum_us[i] / n / 1000, 3) if n else None,
            }
            for i, n in enumerate(t.completed)
        ],
        "percentile_curve": [
            {"percentile": round(p, 4), "latency_us": us} for p, us in result.percentile_curve()
        ],
    }
