"""The result of a load run: tallies of the load processes merged, shown as text, JSON and HTML."""

from __future__ import annotations

import html
import math
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


def describe(settings: dict[str, Any]) -> str:
    s = settings
    mode = (
        f"open loop at {s['rate']:g}/s"
        if s.get("rate")
        else f"closed loop, {s.get('concurrency')} in flight"
    )
    stop = " or ".join(
        x
        for x in (
            f"{s['duration']:g} s" if s.get("duration") else "",
            f"{s['requests']} requests" if s.get("requests") else "",
        )
        if x
    )
    return (
        f"{mode}, {s.get('connections')} connection(s), {s.get('procs')} process(es), {stop}; "
        f"hub {s.get('hub')} as {s.get('member')}"
    )


def _ms(us: float) -> str:
    return f"{us / 1000:.3f}"


def render_text(result: LoadResult) -> str:
    t = result.total
    n = result.requests
    lines = [
        f"txverify load: {describe(result.settings)}",
        f"requests      {n:,} in {t.elapsed:.2f} s = {result.throughput:,.1f}/s",
        "latency (ms)  "
        + "  ".join(f"p{p:g} {_ms(result.latency_us(p))}" for p in PERCENTILES)
        + f"  max {_ms(result.histogram.get_max_value() if n else 0)}",
        f"client CPU    {t.cpu_seconds:.2f} s"
        + (f" ({t.cpu_seconds * 1000 / n:.3f} ms per request)" if n else ""),
    ]
    if result.settings.get("rate"):
        lines.append(f"send lag max  {t.send_lag_max * 1000:.1f} ms (latency counts it)")
    lines += ["", f"{'kind':<14}{'outcome':<34}{'count':>10}"]
    for (kind, outcome), count in sorted(t.outcomes.items()):
        mark = " WRONG" if (kind, outcome) in t.wrong else ""
        mark = mark or (" FAILED" if (kind, outcome) in t.failed else "")
        lines.append(f"{kind:<14}{outcome:<34}{count:>10,}{mark}")
    lines += ["", f"wrong answers {result.wrong_count:,}", f"no answer     {result.failed_count:,}"]
    for ex in t.examples:
        lines.append(
            f"  {ex['class']}: {ex['kind']} {ex['qr']} (request {ex['request_id']}): "
            f"expected {ex['expected']}, got {ex['got']} {ex['detail']}".rstrip()
        )
    return "\n".join(lines)


# --- HTML: one page, inline CSS and SVG, nothing fetched from anywhere ---

_CSS = """
body{font:14px system-ui,sans-serif;margin:2em;color:#222;max-width:960px}
table{border-collapse:collapse;margin:1em 0}td,th{padding:2px 10px;text-align:left}
td.n{text-align:right}tr.bad td{color:#b00}svg{background:#fafafa;border:1px solid #ddd}
.axis{stroke:#888}.grid{stroke:#e4e4e4}text{font-size:11px;fill:#444}
"""
_W, _H, _PAD_L, _PAD_B, _PAD_T = 900, 280, 60, 36, 16
_RIGHT = _W - 40  # room for the last x label


def _nice(value: float) -> float:
    value = max(value, 1e-9)
    magnitude = 10.0 ** len(str(int(value))) / 10 if value >= 1 else 10**-3
    for step in (1, 2, 2.5, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return value


def _chart(
    title: str,
    series: Sequence[tuple[str, str, Sequence[tuple[float, float]]]],
    x_ticks: Sequence[tuple[float, str]],
    x_max: float,
    y_label: str,
) -> str:
    """An SVG line chart: series of (name, colour, points), x from 0 to x_max."""
    y_max = _nice(max((y for _, _, pts in series for _, y in pts), default=1.0))
    plot_w, plot_h = _RIGHT - _PAD_L, _H - _PAD_T - _PAD_B

    def x(v: float) -> float:
        return _PAD_L + plot_w * (v / x_max if x_max else 0)

    def y(v: float) -> float:
        return _PAD_T + plot_h * (1 - v / y_max)

    parts = [f'<svg width="{_W}" height="{_H}" role="img" aria-label="{html.escape(title)}">']
    for i in range(5):
        v = y_max * i / 4
        parts.append(
            f'<line class="grid" x1="{_PAD_L}" x2="{_RIGHT}" y1="{y(v):.1f}" '
            f'y2="{y(v):.1f}"/><text x="{_PAD_L - 6}" y="{y(v) + 4:.1f}" '
            f'text-anchor="end">{v:g}</text>'
        )
    for v, label in x_ticks:
        parts.append(
            f'<text x="{x(v):.1f}" y="{_H - _PAD_B + 16}" text-anchor="middle">'
            f"{html.escape(label)}</text>"
        )
    parts.append(f'<line class="axis" x1="{_PAD_L}" x2="{_RIGHT}" y1="{y(0)}" y2="{y(0)}"/>')
    parts.append(
        f'<text x="14" y="{_PAD_T + plot_h / 2}" transform="rotate(-90 14 '
        f'{_PAD_T + plot_h / 2})" text-anchor="middle">{html.escape(y_label)}</text>'
    )
    for i, (name, colour, pts) in enumerate(series):
        path = " ".join(f"{x(a):.1f},{y(b):.1f}" for a, b in pts)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{path}"/>')
        parts.append(
            f'<text x="{_RIGHT - 180}" y="{_PAD_T + 14 + 14 * i}" fill="{colour}" '
            f'style="fill:{colour}">{html.escape(name)}</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts)


def _table(
    header: Sequence[str], rows: Iterable[Sequence[object]], bad: frozenset[int] = frozenset()
) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cells = "".join(
            f'<td class="n">{v:,}</td>' if isinstance(v, int) else f"<td>{html.escape(str(v))}</td>"
            for v in row
        )
        body.append(f"<tr{' class=bad' if i in bad else ''}>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def render_html(result: LoadResult) -> str:
    """A self-contained page: summary, throughput over time and the latency percentile curve."""
    t = result.total
    seconds = len(t.completed)

    def per_second(counts: list[int]) -> list[tuple[float, float]]:
        # The last second is partial (the run ends within it): scaled, or left out when tiny.
        points = [(i + 0.5, float(n)) for i, n in enumerate(counts)]
        tail = t.elapsed - (seconds - 1)
        if points and tail < 1:
            points[-1:] = [(seconds - 1 + tail / 2, counts[-1] / tail)] if tail >= 0.2 else []
        return points

    throughput = _chart(
        "Throughput over time",
        [
            ("answers/s", "#1f6fb2", per_second(t.completed)),
            ("wrong or no answer/s", "#c0392b", per_second(t.errors)),
        ],
        [(float(i), f"{i}s") for i in range(0, int(t.elapsed) + 1, max(1, seconds // 10))],
        max(t.elapsed, 1.0),
        "requests per second",
    )
    curve = result.percentile_curve()
    nines = [(min(5.0, _nines(p)), us / 1000) for p, us in curve]
    latency = _chart(
        "Latency by percentile",
        [("latency (ms)", "#27864a", nines)],
        [(float(i), f"{100 * (1 - 10**-i):g}%") for i in range(6)],
        5.0,
        "milliseconds",
    )
    summary = [
        ("requests", result.requests),
        ("elapsed", f"{t.elapsed:.2f} s"),
        ("throughput", f"{result.throughput:,.1f}/s"),
        *((f"p{p:g}", f"{_ms(result.latency_us(p))} ms") for p in PERCENTILES),
        ("max", f"{_ms(result.histogram.get_max_value() if result.requests else 0)} ms"),
        ("client CPU", f"{t.cpu_seconds:.2f} s"),
        ("wrong answers", result.wrong_count),
        ("no answer", result.failed_count),
    ]
    outcomes = sorted(t.outcomes.items())
    bad = frozenset(i for i, (key, _) in enumerate(outcomes) if key in t.wrong or key in t.failed)
    examples = _table(
        ("class", "kind", "request", "expected", "got", "detail", "qr"),
        [
            (e["class"], e["kind"], e["request_id"], e["expected"], e["got"], e["detail"], e["qr"])
            for e in t.examples
        ],
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>txverify load report</title>
<style>{_CSS}</style></head><body>
<h1>txverify load report</h1>
<p>{html.escape(describe(result.settings))}</p>
{_table(("", ""), summary)}
<h2>Throughput over time</h2>
{throughput}
<h2>Latency distribution (percentile curve)</h2>
{latency}
<h2>Outcomes</h2>
{_table(("kind", "outcome", "count"), [(k, o, n) for (k, o), n in outcomes], bad)}
<h2>Wrong answers and unanswered requests</h2>
{examples if t.examples else "<p>none</p>"}
</body></html>
"""


def _nines(percentile: float) -> float:
    """90 % -> 1, 99 % -> 2, 99.9 % -> 3: the x position of a percentile on the curve."""
    rest = 1 - percentile / 100
    return 5.0 if rest <= 1e-5 else -math.log10(rest)
