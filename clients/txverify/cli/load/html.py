"""A load result as one HTML page: inline CSS and SVG, nothing fetched from anywhere."""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence

from txverify.cli.load.report import describe, ms_text
from txverify.cli.load.results import PERCENTILES, LoadResult

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
        *((f"p{p:g}", f"{ms_text(result.latency_us(p))} ms") for p in PERCENTILES),
        ("max", f"{ms_text(result.histogram.get_max_value() if result.requests else 0)} ms"),
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
