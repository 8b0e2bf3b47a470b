"""The result of a load run: tallies of the load processes merged, and as JSON."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram  # type: ignore[import-untyped]

from txverify.cli.load import buckets
from txverify.cli.load.schedule import Schedule

# Latencies are recorded in microseconds, 1 µs to 60 s, at 3 significant digits (0.1 %).
LOWEST_US = 1
HIGHEST_US = 60_000_000
SIGNIFICANT_FIGURES = 3
PERCENTILES = (50.0, 90.0, 99.0, 99.9)
MAX_EXAMPLES = 10
# Who ended a request: the hub (an answer, or an error carrying ErrorInfo), or the client:
# its deadline expired, it (or its transport) cancelled, or it had no connection to send on.
CLIENT_KEYS = ("answered", "timed_out", "cancelled", "not_sent", "transport")


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
    sent: list[int] = field(default_factory=list)  # per second of sending
    by_second: list[Counter[str]] = field(default_factory=list)  # outcome -> n, per second
    latency_by_second: list[buckets.Buckets] = field(default_factory=list)
    lag_by_second: list[buckets.Buckets] = field(default_factory=list)  # send lag, µs
    lag: buckets.Buckets = field(default_factory=dict)
    by_kind: dict[str, buckets.Buckets] = field(default_factory=dict)  # latency per kind
    # Per stage (index): HdrHistogram.encode() of its latencies, and its counts.
    stage_histograms: dict[int, bytes] = field(default_factory=dict)
    stage_counts: Counter[tuple[int, str]] = field(default_factory=Counter)  # requests/errors/wrong
    client: Counter[str] = field(default_factory=Counter)  # who ended each request (CLIENT_KEYS)
    elapsed: float = 0.0
    cpu_seconds: float = 0.0
    send_lag_max: float = 0.0  # open loop: how late the latest send was against its schedule

    def count(self, second: int, latency_us: int, outcome: str, *, error: bool) -> None:
        for values in (self.completed, self.errors, self.latency_sum_us):
            _grow(values, second)
        _extend(self.by_second, second, Counter)
        _extend(self.latency_by_second, second, dict)
        self.completed[second] += 1
        self.errors[second] += error
        self.latency_sum_us[second] += latency_us
        self.by_second[second][outcome] += 1
        buckets.record(self.latency_by_second[second], latency_us)

    def count_send(self, second: int, lag_us: float | None) -> None:
        _grow(self.sent, second)
        self.sent[second] += 1
        if lag_us is not None:
            _extend(self.lag_by_second, second, dict)
            buckets.record(self.lag_by_second[second], lag_us)
            buckets.record(self.lag, lag_us)


def _extend(values: list[Any], second: int, new: Callable[[], Any]) -> None:
    values.extend(new() for _ in range(second + 1 - len(values)))


def _add(total: list[int], part: Sequence[int], offset: int = 0) -> None:
    _grow(total, offset + len(part) - 1)
    for i, value in enumerate(part):
        total[offset + i] += value


@dataclass
class Figures:
    """The figures thresholds are judged on, of a whole run or of one stage."""

    requests: int
    errors: int  # wrong answers and requests without an answer
    wrong: int
    elapsed: float  # seconds the requests were sent over
    histogram: HdrHistogram

    @property
    def throughput(self) -> float:
        return self.requests / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def latency_us(self, percentile: float) -> float:
        return float(self.histogram.get_value_at_percentile(percentile)) if self.requests else 0.0

    def latency(self) -> dict[str, float]:
        """p50 ... p99.9, max, min, mean and stddev, in µs."""
        h, some = self.histogram, bool(self.requests)
        out: dict[str, float] = {f"p{p:g}": int(self.latency_us(p)) for p in PERCENTILES}
        out["max"] = int(h.get_max_value()) if some else 0
        out["min"] = int(h.get_min_value()) if some else 0
        out["mean"] = round(h.get_mean_value(), 1) if some else 0
        out["stddev"] = round(h.get_stddev(), 1) if some else 0
        return out


@dataclass
class LoadResult:
    """A whole run: histograms merged with HdrHistogram.add, counts summed."""

    settings: dict[str, Any]
    histogram: HdrHistogram = field(default_factory=new_histogram)
    total: Tally = field(default_factory=Tally)  # every count; its `histogram` stays empty
    processes: int = 0
    schedule: Schedule | None = None  # the stages, when the run had any
    stage_histograms: dict[int, HdrHistogram] = field(default_factory=dict)
    rounds: list[LoadResult] = field(default_factory=list)  # with --rounds N, each round
    metadata: dict[str, Any] = field(default_factory=dict)
    thresholds: list[dict[str, Any]] = field(default_factory=list)  # judged, see thresholds.py
    # The run's own thresholds judged on each stage too: shown, not counted in the exit code.
    stage_thresholds: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    capacity: dict[str, Any] | None = None  # --find-capacity, see capacity.py
    offered: list[float] | None = None  # requests asked for per second (open loop)
    process_cpu: list[float] = field(default_factory=list)  # CPU seconds of each load process
    interrupted: bool = False  # Ctrl-C: sending stopped early; rounds and steps stop too

    @classmethod
    def merge(
        cls, settings: dict[str, Any], tallies: Iterable[Tally], schedule: Schedule | None = None
    ) -> LoadResult:
        result = cls(settings, schedule=schedule)
        for part in tallies:
            result.processes += 1
            result._add(part, 0)
            result.total.elapsed = max(result.total.elapsed, part.elapsed)
            result.process_cpu.append(part.cpu_seconds)
        result._settle_examples()
        return result

    @classmethod
    def concat(cls, parts: Sequence[LoadResult], *, as_stages: bool = False) -> LoadResult:
        """Runs one after another as one: their seconds in sequence, their counts summed.
        `as_stages`: each run (of no stages of its own) becomes a stage (capacity steps)."""
        result = cls(dict(parts[0].settings), schedule=parts[0].schedule)
        result.processes = max(p.processes for p in parts)
        offset, offered = 0, []
        for i, part in enumerate(parts):
            t = part.total
            restaged = {0: part.histogram} if as_stages else part.stage_histograms
            for index, h in restaged.items():
                key = i if as_stages else index
                result.stage_histograms.setdefault(key, new_histogram()).add(h)
            result._add(t, offset, histogram=part.histogram, stage=i if as_stages else None)
            result.total.elapsed += t.elapsed
            seconds = part.seconds
            offered += (part.offered or [])[:seconds] + [0.0] * (seconds - len(part.offered or []))
            offset += seconds
            cpu = result.process_cpu
            cpu += [0.0] * (len(part.process_cpu) - len(cpu))
            for n, c in enumerate(part.process_cpu):
                cpu[n] += c
        result.offered = offered if any(p.offered for p in parts) else None
        result.interrupted = any(p.interrupted for p in parts)
        result._settle_examples()
        return result

    def _add(
        self, part: Tally, offset: int, *, histogram: Any = None, stage: int | None = None
    ) -> None:
        t = self.total
        if histogram is not None:
            self.histogram.add(histogram)
        elif part.histogram:
            self.histogram.add(HdrHistogram.decode(part.histogram))
            for index, encoded in part.stage_histograms.items():
                h = self.stage_histograms.setdefault(index, new_histogram())
                h.add(HdrHistogram.decode(encoded))
        t.outcomes += part.outcomes
        t.wrong += part.wrong
        t.failed += part.failed
        t.examples += part.examples
        t.client += part.client
        if stage is None:
            t.stage_counts += part.stage_counts
        else:
            wrong, failed = sum(part.wrong.values()), sum(part.failed.values())
            t.stage_counts[stage, "requests"] += sum(part.outcomes.values())
            t.stage_counts[stage, "errors"] += wrong + failed
            t.stage_counts[stage, "wrong"] += wrong
        for total, values in (
            (t.completed, part.completed),
            (t.errors, part.errors),
            (t.latency_sum_us, part.latency_sum_us),
            (t.sent, part.sent),
        ):
            _add(total, values, offset)
        for many, parts in ((t.by_second, part.by_second),):
            _extend(many, offset + len(parts) - 1, Counter)
            for i, counts in enumerate(parts):
                many[offset + i] += counts
        for lists, given in ((t.latency_by_second, part.latency_by_second),
                             (t.lag_by_second, part.lag_by_second)):  # fmt: skip
            _extend(lists, offset + len(given) - 1, dict)
            for i, b in enumerate(given):
                buckets.add(lists[offset + i], b)
        buckets.add(t.lag, part.lag)
        for kind, b in part.by_kind.items():
            buckets.add(t.by_kind.setdefault(kind, {}), b)
        t.cpu_seconds += part.cpu_seconds
        t.send_lag_max = max(t.send_lag_max, part.send_lag_max)

    def _settle_examples(self) -> None:
        # One example per kind and outcome, wrong answers first.
        t = self.total
        unique = {(e["class"], e["kind"], e["got"]): e for e in reversed(t.examples)}
        t.examples = sorted(unique.values(), key=lambda e: e["class"] != "wrong")[:MAX_EXAMPLES]

    @property
    def seconds(self) -> int:
        """Whole seconds the run's timeseries spans."""
        t = self.total
        return max(math.ceil(t.elapsed), len(t.completed), len(t.sent))

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
    def thresholds_failed(self) -> int:
        return sum(not t["passed"] for t in self.thresholds)

    @property
    def exit_code(self) -> int:
        """1 when an answer was wrong; else, with thresholds, 3 when one failed (the thresholds
        judge requests without an answer too); else 4 when some requests got no answer."""
        if self.wrong_count:
            return 1
        if self.thresholds:
            return 3 if self.thresholds_failed else 0
        return 4 if self.failed_count else 0

    def figures(self) -> Figures:
        errors = self.wrong_count + self.failed_count
        return Figures(self.requests, errors, self.wrong_count, self.total.elapsed, self.histogram)

    def stage_figures(self, index: int) -> Figures:
        counts = self.total.stage_counts
        start, end = self.stage_bounds()[index]
        return Figures(
            counts[index, "requests"],
            counts[index, "errors"],
            counts[index, "wrong"],
            end - start,
            self.stage_histograms.get(index) or new_histogram(),
        )

    def stage_bounds(self) -> list[tuple[float, float]]:
        return self.schedule.bounds() if self.schedule else []

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
    """The report as JSON-ready data: the figures, the per-second timeseries, the stages,
    the thresholds judged, the client's own failures, the rounds; README, "Load reports"."""
    t = result.total
    outcomes = _by(t.outcomes, 1)
    statuses: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for outcome, n in outcomes.items():
        status, _, reason = outcome.partition("/")
        statuses[status] += n
        reasons[reason or status] += n
    return {
        "schema": 2,
        "metadata": result.metadata,
        "settings": result.settings,
        "processes": result.processes,
        "requests": result.requests,
        "elapsed_s": round(t.elapsed, 3),
        "throughput_rps": round(result.throughput, 1),
        "latency_us": result.figures().latency(),
        "outcomes": outcomes,
        "by_status": dict(sorted(statuses.items())),
        "by_reason": dict(sorted(reasons.items())),
        "by_kind": _nested(t.outcomes),
        "by_kind_latency_us": _kind_latency(t),
        "errors": result.wrong_count + result.failed_count,
        "wrong_answers": {"count": result.wrong_count, "by_kind": _nested(t.wrong)},
        "failed": {"count": result.failed_count, "by_kind": _nested(t.failed)},
        "examples": t.examples,
        "client": client_json(result),
        "client_cpu_s": round(t.cpu_seconds, 3),
        "send_lag_max_ms": round(t.send_lag_max * 1000, 3),
        "thresholds": result.thresholds,
        "exit_code": result.exit_code,
        "stages": stages_json(result),
        "rounds": [_round_json(i, r) for i, r in enumerate(result.rounds, 1)],
        "capacity": result.capacity,
        "histogram": histogram_json(result.histogram),
        "timeseries": timeseries_json(result),
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


def _ms(us: float | None) -> float | None:
    return None if us is None else round(us / 1000, 3)


def histogram_json(histogram: HdrHistogram) -> list[dict[str, float]]:
    recorded = histogram.get_recorded_iterator()
    return buckets.coarse((i.value_iterated_to, i.count_added_in_this_iter_step) for i in recorded)


def _kind_latency(t: Tally) -> dict[str, dict[str, float | None]]:
    out: dict[str, dict[str, float | None]] = {}
    for kind, b in sorted(t.by_kind.items()):
        count = sum(b.values())
        mean = sum(buckets.upper_us(k) * n for k, n in b.items()) / count if count else None
        out[kind] = {"count": count, "mean": None if mean is None else round(mean, 1)}
        for p in (50.0, 90.0, 99.0):
            value = buckets.percentile_us(b, p)
            out[kind][f"p{p:g}"] = None if value is None else round(value, 1)
    return out


def timeseries_json(result: LoadResult) -> list[dict[str, Any]]:
    t, schedule = result.total, result.schedule
    seconds = max(len(t.completed), len(t.sent), len(result.offered or []))
    rows = []
    for i in range(seconds):
        latency = t.latency_by_second[i] if i < len(t.latency_by_second) else {}
        lag = t.lag_by_second[i] if i < len(t.lag_by_second) else {}
        done = t.completed[i] if i < len(t.completed) else 0
        pct = {f"p{p:g}_ms": _ms(buckets.percentile_us(latency, p)) for p in (50.0, 90.0, 99.0)}
        offered = result.offered[i] if result.offered and i < len(result.offered) else None
        rows.append({
            "second": i,
            "offered": None if offered is None else round(offered, 1),
            "sent": t.sent[i] if i < len(t.sent) else 0,
            "completed": done,
            "errors": t.errors[i] if i < len(t.errors) else 0,
            "by_outcome": dict(sorted(t.by_second[i].items())) if i < len(t.by_second) else {},
            **pct,
            "mean_ms": round(t.latency_sum_us[i] / done / 1000, 3) if done else None,
            "send_lag_p99_ms": _ms(buckets.percentile_us(lag, 99.0)),
            "stage": schedule.stage_at(i + 0.5) if schedule and i < schedule.duration else None,
        })  # fmt: skip
    return rows


def stages_json(result: LoadResult) -> list[dict[str, Any]]:
    if result.schedule is None:
        return []
    out = []
    for i, (stage, (start, end)) in enumerate(
        zip(result.schedule.stages, result.stage_bounds(), strict=True)
    ):
        f = result.stage_figures(i)
        out.append({
            "index": i, "start_s": round(start, 3), "end_s": round(end, 3),
            "unit": result.schedule.unit, "from": stage.start, "to": stage.target,
            "requests": f.requests, "throughput_rps": round(f.throughput, 1),
            "errors": f.errors, "wrong": f.wrong, "error_rate": round(f.error_rate, 6),
            "latency_us": f.latency(),
            "thresholds": [
                {k: t[k] for k in ("expression", "measured", "unit", "passed")}
                for t in result.stage_thresholds.get(i, [])
            ],
        })  # fmt: skip
    return out


def _round_json(number: int, r: LoadResult) -> dict[str, Any]:
    f = r.figures()
    latency = f.latency()
    return {
        "round": number,
        "requests": f.requests,
        "elapsed_s": round(f.elapsed, 3),
        "throughput_rps": round(f.throughput, 1),
        "errors": f.errors,
        "error_rate": round(f.error_rate, 6),
        "latency_us": {k: latency[k] for k in ("p50", "p90", "p99", "mean")},
    }


SATURATED = 0.9  # of a core: a load process this busy may be what limits the rate
LAGGING_MS = 10.0  # sends this late at p99: the load source did not keep its schedule


def client_json(result: LoadResult) -> dict[str, Any]:
    t = result.total
    lag = {f"p{p:g}": _ms(buckets.percentile_us(t.lag, p)) for p in (50.0, 99.0)}
    lag["max"] = round(t.send_lag_max * 1000, 3) if t.lag else None
    for k in ("p50", "p99"):  # a bucket's middle can sit above the largest value in it
        value, most = lag[k], lag["max"]
        lag[k] = None if value is None or most is None else min(value, most)
    busy = [round(c / t.elapsed, 3) if t.elapsed else 0.0 for c in result.process_cpu]
    notes = []
    if busy and max(busy) >= SATURATED:
        notes.append(
            f"a load process used {max(busy):.2f} of a core: the load source may have been "
            "the bottleneck (add --procs, or run it on another machine)"
        )
    if (lag["p99"] or 0) > LAGGING_MS:
        notes.append(
            f"sends were {lag['p99']:.1f} ms late at p99: the load source did not keep its "
            "schedule, so the rate the hub got was lower than offered"
        )
    given_up = sum(t.client[k] for k in CLIENT_KEYS[1:])
    if given_up:
        notes.append(
            f"{given_up:,} requests ended on the client's side (its deadline, a cancel or no "
            "connection): the hub did not answer them"
        )
    return {
        **{k: t.client[k] for k in CLIENT_KEYS},
        "send_lag_ms": lag,
        "cpu_s": round(t.cpu_seconds, 3),
        "cpu_per_process": [round(c, 3) for c in result.process_cpu],
        "cores_busy_per_process": busy,
        "saturated": max(busy or [0.0]) >= SATURATED or (lag["p99"] or 0) > LAGGING_MS,
        "note": "; ".join(notes),
    }
