"""A load run's JSON (to_json) as one HTML page: inline CSS and SVG, nothing fetched, no script.

The page and its sections live here; the SVG drawing they use is in charts.py.

Every key past the pre-M13 ones may be missing, empty or null (older runs, runs without
stages): each section renders from what is there and is left out when nothing is.
"""

from __future__ import annotations

import itertools
import math
import shlex
from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

from txverify.cli.load import charts
from txverify.cli.load.report import describe

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;padding:0 1.5em;color:#222;
max-width:1100px}
h1{margin:.2em 0}h2{margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
h3{margin:1.2em 0 .3em;font-size:15px}
table{border-collapse:collapse;margin:.6em 0}td,th{padding:2px 10px;text-align:left;
border-bottom:1px solid #eee;vertical-align:top}th{background:#f3f3f3;font-weight:600}
td.n{text-align:right;font-variant-numeric:tabular-nums}tr.bad td{color:#b00}
svg{background:#fafafa;border:1px solid #ddd;max-width:100%;height:auto;display:block}
.axis{stroke:#888}.grid{stroke:#e4e4e4}text{font-size:11px;fill:#444}
text.label{paint-order:stroke;stroke:#fafafa;stroke-width:3px}
.verdict{padding:.5em 1em;border-radius:6px;font-size:16px;margin:.8em 0}
.pass{background:#e6f4ea;color:#1a7f37}.fail{background:#fde8e8;color:#b00}
.warn{background:#fff4d6;color:#7a5200;padding:.5em 1em;border-radius:6px}
.badge{display:inline-block;padding:0 8px;border-radius:4px;font-weight:600;font-size:12px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(118px,1fr));gap:8px;
margin:.6em 0}.card{border:1px solid #ddd;border-radius:6px;padding:6px 10px;background:#fafafa}
.card b{display:block;font-size:20px;font-variant-numeric:tabular-nums}
.card span{color:#666;font-size:12px}.card.bad b{color:#b00}
.cols{display:grid;grid-template-columns:1fr 1fr;gap:2em}
.legend{margin:.3em 0 1em;font-size:12px}.legend span{margin-right:14px;white-space:nowrap}
.legend i{display:inline-block;width:14px;height:10px;margin-right:4px;background:var(--c)}
.legend i.dash{height:0;border-top:2px dashed var(--c);background:none;vertical-align:middle}
code{font:12px ui-monospace,monospace;background:#f3f3f3;padding:1px 4px;border-radius:3px;
word-break:break-all}.meter{display:inline-block;width:120px;height:8px;background:#eee;
margin-right:6px}.meter i{display:block;height:100%;background:var(--c)}
"""
_PCT = {"p50": "#1f6fb2", "p90": "#e08a00", "p99": "#c0392b", "mean": "#777777"}
_PASS, _FAIL, _OFFERED = "#1a7f37", "#c0392b", "#222222"
# Outcomes that were wrong or unanswered for some kind take warm colours, the others cool.
_COOL = ("#4e79a7", "#59a14f", "#76b7b2", "#b07aa1", "#8cd17d", "#499894", "#a0cbe8")
_WARM = ("#e15759", "#f28e2b", "#edc948", "#ff9da7", "#9c755f", "#d37295")
_MAX_LAYERS = 10  # more outcomes than this are summed into "other"


class _Markup(str):
    """HTML built here from escaped parts: _table puts it in as it is."""


class _Num(str):
    """A formatted number: right-aligned in a table."""


# --- reading the report: any key may be missing or of the wrong type ---


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _dicts(value: object) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _num(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _count(value: object) -> int:
    n = _num(value)
    return int(n) if n is not None else 0


# --- formatting ---


def _ms(value: float | None) -> str:
    """Milliseconds with the decimals that matter: 0.123, 12.34, 1,234.5."""
    if value is None:
        return "–"
    return f"{value:,.{3 if abs(value) < 1 else 2 if abs(value) < 100 else 1}f}"


def _us(value: object) -> str:
    n = _num(value)
    return _ms(None if n is None else n / 1000)


def _fmt(value: object, spec: str = ",.1f", suffix: str = "") -> str:
    n = _num(value)
    return "–" if n is None else f"{n:{spec}}{suffix}"


def _pct(value: object) -> str:
    n = _num(value)
    return "–" if n is None else f"{100 * n:.3g} %"


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def _setting(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_setting(v)}" for k, v in value.items()) or "–"
    if isinstance(value, list | tuple):
        return ", ".join(_setting(v) for v in value) or "–"
    return str(value)


def _badge(passed: bool, text: str) -> _Markup:
    return _Markup(f'<span class="badge {"pass" if passed else "fail"}">{escape(text)}</span>')


def _cell(value: object) -> str:
    if isinstance(value, _Markup):
        return f"<td>{value}</td>"
    if isinstance(value, _Num):
        return f'<td class="n">{escape(value)}</td>'
    if isinstance(value, int) and not isinstance(value, bool):
        return f'<td class="n">{value:,}</td>'
    return f"<td>{escape(str(value))}</td>"


def _table(header: Sequence[str], rows: Iterable[Sequence[object]], bad: Iterable[int] = ()) -> str:
    marked = set(bad)
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = (
        f"<tr{' class=bad' if i in marked else ''}>{''.join(_cell(v) for v in row)}</tr>"
        for i, row in enumerate(rows)
    )
    head = f"<tr>{head}</tr>" if any(header) else ""  # a table of label: value has none
    return f"<table>{head}{''.join(body)}</table>"


def _section(title: str, *parts: str) -> str:
    return f"<section><h2>{escape(title)}</h2>\n" + "\n".join(p for p in parts if p) + "</section>"


def _figure(title: str, svg: str, legend: Sequence[tuple[str, str, bool]] = ()) -> str:
    items = "".join(
        f'<span><i class="{"dash" if dashed else "box"}" style="--c:{escape(colour)}"></i>'
        f"{escape(name)}</span>"
        for name, colour, dashed in legend
    )
    return f"<h3>{escape(title)}</h3>\n{svg}\n" + (
        f'<p class="legend">{items}</p>' if items else ""
    )


# --- the header ---


def _verdict(report: dict[str, Any]) -> str:
    thresholds = _dicts(report.get("thresholds"))
    failed_thresholds = sum(1 for t in thresholds if t.get("passed") is False)
    wrong = _count(_dict(report.get("wrong_answers")).get("count"))
    unanswered = _count(_dict(report.get("failed")).get("count"))
    problems = [
        f"{failed_thresholds} of {_plural(len(thresholds), 'threshold')} failed"
        if failed_thresholds
        else "",
        _plural(wrong, "wrong answer") if wrong else "",
        f"{_plural(unanswered, 'request')} got no answer" if unanswered else "",
    ]
    problems = [p for p in problems if p]
    code = _num(report.get("exit_code"))
    tail = f" (exit code {code:g})" if code is not None else ""
    if problems:
        return f'<p class="verdict fail"><b>FAILED</b>: {escape("; ".join(problems))}{tail}</p>'
    met = f"; all {_plural(len(thresholds), 'threshold')} met" if thresholds else ""
    return f'<p class="verdict pass"><b>PASSED</b>: every answer right{met}{tail}</p>'


def _host(host: dict[str, Any]) -> str:
    cores = _num(host.get("cores"))
    parts = (
        str(host.get("hostname") or ""),
        _plural(int(cores), "core") if cores is not None else "",
        f"Python {host['python']}" if host.get("python") else "",
        str(host.get("platform") or ""),
    )
    return " · ".join(p for p in parts if p)


def _metadata(report: dict[str, Any]) -> str:
    meta = _dict(report.get("metadata"))
    argv = meta.get("argv")
    command = shlex.join(str(a) for a in argv) if isinstance(argv, list) else ""
    rows = [
        ("txverify", meta.get("txverify_version")),
        ("git commit", _Markup(f"<code>{escape(str(meta['git_commit']))}</code>"))
        if meta.get("git_commit")
        else ("", None),
        ("started (Bangkok)", meta.get("started_bangkok")),
        ("started (UTC)", meta.get("started_utc")),
        ("host", _host(_dict(meta.get("host"))) or None),
        ("hub", meta.get("hub") or _dict(report.get("settings")).get("hub")),
        ("load processes", report.get("processes")),
        ("command", _Markup(f"<code>{escape(command)}</code>") if command else None),
    ]
    shown = [(k, v if isinstance(v, _Markup) else str(v)) for k, v in rows if v is not None]
    return "<div><h3>Run</h3>" + _table(("", ""), shown) + "</div>" if shown else ""


def _settings(report: dict[str, Any]) -> str:
    settings = _dict(report.get("settings"))
    rows = [(str(k), _setting(v)) for k, v in settings.items()]
    return "<div><h3>Settings</h3>" + _table(("", ""), rows) + "</div>" if rows else ""


def _describe(settings: dict[str, Any]) -> str:
    if not settings:
        return ""
    try:
        return describe(settings)
    except (KeyError, TypeError, ValueError):  # a hand-edited or odd report still renders
        return ""


def _header(report: dict[str, Any]) -> str:
    line = _describe(_dict(report.get("settings")))
    return (
        "<h1>txverify load report</h1>"
        + _verdict(report)
        + (f"<p>{escape(line)}</p>" if line else "")
        + f'<div class="cols">{_metadata(report)}{_settings(report)}</div>'
    )


# --- figures and tables ---


def _cards(items: Iterable[tuple[str, str, bool]]) -> str:
    cards = "".join(
        f'<div class="card{" bad" if bad else ""}"><b>{escape(value)}</b>'
        f"<span>{escape(label)}</span></div>"
        for label, value, bad in items
    )
    return f'<div class="cards">{cards}</div>'


def _summary(report: dict[str, Any]) -> str:
    requests, errors = _count(report.get("requests")), _count(report.get("errors"))
    wrong = _count(_dict(report.get("wrong_answers")).get("count"))
    unanswered = _count(_dict(report.get("failed")).get("count"))
    share = f" ({100 * errors / requests:.2g} %)" if errors and requests else ""  # of requests
    volume = [
        ("requests", f"{requests:,}", False),
        ("elapsed", _fmt(report.get("elapsed_s"), ",.2f", " s"), False),
        ("throughput", _fmt(report.get("throughput_rps"), ",.1f", "/s"), False),
        (f"errors{share}", f"{errors:,}", errors > 0),
        ("wrong answers", f"{wrong:,}", wrong > 0),
        ("no answer", f"{unanswered:,}", unanswered > 0),
    ]
    latency = _dict(report.get("latency_us"))
    keys = ("min", "mean", "stddev", "p50", "p90", "p99", "p99.9", "max")
    names = {"stddev": "std dev"}
    figures = [(f"{names.get(k, k)} ms", _us(latency.get(k)), False) for k in keys]
    return _section("Summary", _cards(volume), "<h3>Latency (ms)</h3>", _cards(figures))


def _thresholds(report: dict[str, Any]) -> str:
    thresholds = _dicts(report.get("thresholds"))
    if not thresholds:
        return ""
    rows, bad = [], []
    for i, t in enumerate(thresholds):
        unit = f" {t['unit']}" if t.get("unit") else ""
        passed = t.get("passed") is True
        bad += [] if passed else [i]
        rows.append(
            (
                _badge(passed, "pass" if passed else "fail"),
                _Markup(f"<code>{escape(str(t.get('expression', '')))}</code>"),
                str(t.get("scope") or "run"),
                _Num(_fmt(t.get("measured"), ",.6g", unit)),
                f"{t.get('op') or ''} {_fmt(t.get('bound'), ',.6g', unit)}".strip(),
            )
        )
    header = ("result", "threshold", "scope", "measured", "bound")
    return _section("Thresholds", _table(header, rows, bad))


_CLIENT_COUNTS = (
    ("answered", "answered by the hub", "a response, or an error carrying the hub's ErrorInfo"),
    ("timed_out", "timed out", "the client's deadline expired first (DEADLINE_EXCEEDED)"),
    ("cancelled", "cancelled", "given up by the client or its transport (CANCELLED)"),
    ("not_sent", "not sent", "no connection to send on (UNAVAILABLE, no ErrorInfo)"),
)


def _client_counts(client: dict[str, Any], requests: int) -> str:
    rows: list[tuple[object, ...]] = []
    bad: list[int] = []
    for i, (key, name, meaning) in enumerate(_CLIENT_COUNTS):
        if key not in client:
            continue
        n = _count(client.get(key))
        bad += [len(rows)] if n and i else []
        rows.append((name, n, _Num(f"{100 * n / requests:.2f} %" if requests else "–"), meaning))
    return _table(("", "requests", "share", "what it means"), rows, bad) if rows else ""


def _meter(share: float | None) -> _Markup:
    """How busy a load process kept its core, red from 0.9 (where the client calls it saturated)."""
    if share is None:
        return _Markup("")
    colour = _FAIL if share >= 0.9 else "#1f6fb2"
    return _Markup(
        f'<span class="meter" style="--c:{colour}"><i style="width:{100 * min(share, 1):.0f}%">'
        f"</i></span>{100 * share:.0f} % of a core"
    )


def _cpu(client: dict[str, Any]) -> str:
    cpu, busy = (client.get(k) for k in ("cpu_per_process", "cores_busy_per_process"))
    cpu, busy = (v if isinstance(v, list) else [] for v in (cpu, busy))
    rows = [
        (i + 1, _Num(_fmt(cpu[i] if i < len(cpu) else None, ".2f", " s")),
         _meter(_num(busy[i]) if i < len(busy) else None))
        for i in range(max(len(cpu), len(busy)))
    ]  # fmt: skip
    return _table(("process", "CPU", "busy"), rows) if rows else ""


def _client(report: dict[str, Any]) -> str:
    client = _dict(report.get("client"))
    lag = _dict(client.get("send_lag_ms"))
    cpu_s = client.get("cpu_s", report.get("client_cpu_s"))
    lag_text = (
        " · ".join(f"{k} {_ms(_num(lag.get(k)))} ms" for k in ("p50", "p99", "max"))
        if lag
        else f"max {_ms(_num(report.get('send_lag_max_ms')))} ms"
    )
    note = ""
    if client.get("saturated"):
        text = str(client.get("note") or "the load source was the bottleneck")
        note = f'<p class="warn">⚠ Load source saturated: {escape(text)}</p>'
    facts = (
        f"<p>Client CPU {escape(_fmt(cpu_s, ',.2f', ' s'))} in all. Send lag (how late sends "
        f"were against the schedule; latency counts it): {escape(lag_text)}.</p>"
    )
    counts = _client_counts(client, _count(report.get("requests")))
    return _section("The load source (client)", note, counts, facts, _cpu(client))


# --- over time ---


def _samples(report: dict[str, Any]) -> tuple[float, list[tuple[float, float, dict[str, Any]]]]:
    """The time axis's end and each second's (x, rate factor, row): x is the middle of the
    second; the run ends inside its last second, so that one's counts are scaled up to a
    rate, or left out when it is too short to say anything."""
    rows = _dicts(report.get("timeseries"))
    if not rows:  # older runs: the timeline has completed, errors and the mean
        rows = [r | {"mean_ms": r.get("mean_latency_ms")} for r in _dicts(report.get("timeline"))]
    seconds = [_num(r.get("second")) for r in rows]
    points = [
        (s if s is not None else float(i), r)
        for i, (s, r) in enumerate(zip(seconds, rows, strict=True))
    ]
    elapsed = _num(report.get("elapsed_s")) or 0.0
    end = max([elapsed, *(s + 1 for s, _ in points)])
    out = [(s + 0.5, 1.0, r) for s, r in points]
    if points and 0 <= (tail := elapsed - points[-1][0]) < 1:
        last, row = points[-1]
        out[-1:] = [(last + tail / 2, 1 / tail, row)] if tail >= 0.2 else []
    return end, out


def _stage_label(i: int, stage: dict[str, Any]) -> str:
    low, high = _num(stage.get("from")), _num(stage.get("to"))
    unit = {"rate": "/s", "concurrency": " in flight"}.get(str(stage.get("unit")), "")
    index = _count(stage.get("index", i)) + 1  # numbered from 1, as thresholds name them
    if low is None or high is None:
        return f"stage {index}"
    target = f"{low:g}" if low == high else f"{low:g}→{high:g}"
    return f"stage {index}: {target}{unit}"


def _stage_marks(report: dict[str, Any]) -> list[tuple[float, str]]:
    stages = enumerate(_dicts(report.get("stages")))
    return [
        (start, _stage_label(i, s))
        for i, s in stages
        if (start := _num(s.get("start_s"))) is not None
    ]


def _outcome_colours(report: dict[str, Any], names: Sequence[str]) -> dict[str, str]:
    bad = {
        outcome
        for key in ("wrong_answers", "failed")
        for per_kind in _dict(_dict(report.get(key)).get("by_kind")).values()
        for outcome in _dict(per_kind)
    }
    warm, cool = iter(_WARM * 2), iter(_COOL * 2)
    return {n: "#bab0ac" if n == "other" else next(warm if n in bad else cool) for n in names}


def _layers(samples: Sequence[tuple[float, float, dict[str, Any]]]) -> dict[str, list[float]]:
    """Answers per second by outcome, biggest first, the smallest summed into "other"."""
    rows = [(f, _dict(r.get("by_outcome"))) for _, f, r in samples]
    totals: dict[str, float] = {}
    for _, by in rows:
        for name, n in by.items():
            totals[str(name)] = totals.get(str(name), 0.0) + (_num(n) or 0.0)
    names = sorted(totals, key=lambda n: -totals[n])
    kept = names if len(names) <= _MAX_LAYERS else names[: _MAX_LAYERS - 1]
    layers = {n: [f * (_num(by.get(n)) or 0.0) for f, by in rows] for n in kept}
    if len(kept) < len(names):
        rest = [sum(f * (_num(by.get(n)) or 0.0) for n in names[len(kept) :]) for f, by in rows]
        layers["other"] = rest
    return layers


def _series(
    samples: Sequence[tuple[float, float, dict[str, Any]]], key: str, rate: bool
) -> list[tuple[float, float | None]]:
    """One column of the seconds: a count times its rate factor, or a value as it is."""
    points = []
    for x, factor, row in samples:
        v = _num(row.get(key))
        points.append((x, None if v is None else v * factor if rate else v))
    return points


def _rate_chart(report: dict[str, Any], end: float, samples: Sequence[Any]) -> str:
    layers = _layers(samples)
    colours = _outcome_colours(report, list(layers))
    lines = [
        (name, colour, _series(samples, key, rate=True), dash)
        for key, name, colour, dash in (
            ("offered", "offered (the schedule)", _OFFERED, True),
            ("completed", "answers", "#1f6fb2", False),
            ("errors", "wrong or no answer", _FAIL, False),
        )
        if (key != "completed" or not layers)  # the stack already shows every answer
    ]
    lines = [ln for ln in lines if any(y for _, y in ln[2])]
    stacked = [sum(v) for v in zip(*layers.values(), strict=True)] if layers else []
    high = max([1.0, *stacked, *(y or 0.0 for _, _, pts, _ in lines for _, y in pts)])
    top, y_ticks = charts.linear(high)
    plot = charts.Plot(0.0, end, top)
    xs = [x for x, _, _ in samples]
    body = [charts.stack(plot, xs, [(colours[n], v) for n, v in layers.items()])]
    body += [charts.line(plot, pts, colour, dash) for _, colour, pts, dash in lines]
    labels = ("seconds since the start", "requests per second")
    svg = charts.svg(plot, "Answers per second", labels, (charts.ticks_upto(end), y_ticks))
    svg += "".join(body) + charts.vmarks(plot, _stage_marks(report)) + "</svg>"
    legend = [(n, colours[n], False) for n in layers] + [(n, c, d) for n, c, _, d in lines]
    return _figure("Answers per second" + (", by outcome" if layers else ""), svg, legend)


def _latency_chart(report: dict[str, Any], end: float, samples: Sequence[Any]) -> str:
    lines = [
        (name, _PCT[name], _series(samples, f"{name}_ms", rate=False), name == "mean")
        for name in ("p50", "p90", "p99", "mean")
    ]
    lines = [ln for ln in lines if any(y is not None for _, y in ln[2])]
    if not lines:
        return ""
    high = max([0.001, *(y or 0.0 for _, _, pts, _ in lines for _, y in pts)])
    top, y_ticks = charts.linear(high)
    plot = charts.Plot(0.0, end, top)
    labels = ("seconds since the start", "latency (ms)")
    svg = charts.svg(plot, "Latency over time", labels, (charts.ticks_upto(end), y_ticks))
    svg += "".join(charts.line(plot, pts, colour, dash) for _, colour, pts, dash in lines)
    svg += charts.vmarks(plot, _stage_marks(report)) + "</svg>"
    return _figure("Latency over time", svg, [(n, c, d) for n, c, _, d in lines])


def _over_time(report: dict[str, Any]) -> str:
    end, samples = _samples(report)
    if not samples:
        return ""
    return _section(
        "Over time", _rate_chart(report, end, samples), _latency_chart(report, end, samples)
    )


def _stage_over(stage: dict[str, Any]) -> str:
    """The run's thresholds this stage alone would fail (shown; the exit code ignores them)."""
    return ", ".join(
        str(t.get("expression"))
        for t in _dicts(stage.get("thresholds"))
        if t.get("passed") is False
    )


def _stages(report: dict[str, Any]) -> str:
    stages = _dicts(report.get("stages"))
    if not stages:
        return ""
    rows = []
    for i, s in enumerate(stages):
        lat = _dict(s.get("latency_us"))
        when = f"{_fmt(s.get('start_s'), 'g')}–{_fmt(s.get('end_s'), 'g')} s"
        figures = (_Num(_us(lat.get(k))) for k in ("p50", "p90", "p99", "p99.9", "max"))
        rows.append(
            (
                _stage_label(i, s),
                when,
                _count(s.get("requests")),
                _Num(_fmt(s.get("throughput_rps"), ",.1f", "/s")),
                _count(s.get("errors")),
                _Num(_pct(s.get("error_rate"))),
                *figures,
                _stage_over(s),
            )
        )
    header = ("stage", "time", "requests", "throughput", "errors", "error rate", "p50 ms",
              "p90 ms", "p99 ms", "p99.9 ms", "max ms", "run thresholds over")  # fmt: skip
    bad = [i for i, s in enumerate(stages) if _count(s.get("errors")) or _stage_over(s)]
    return _section("Stages", _table(header, rows, bad))


# --- the distribution ---


def _histogram_chart(report: dict[str, Any]) -> str:
    buckets = sorted(
        (le / 1000, n)
        for b in _dicts(report.get("histogram"))
        if (le := _num(b.get("le_us"))) and le > 0 and (n := _num(b.get("count")))
    )
    if not buckets:
        return ""
    # About ten buckets a decade; only the non-empty ones are listed, so the narrowest gap
    # between neighbours (when finer) is the width.
    gaps = (b / a for (a, _), (b, _) in itertools.pairwise(buckets) if b > a)
    ratio = min([10**0.1, *gaps])
    low = 10 ** math.floor(math.log10(buckets[0][0] / ratio))
    high = 10 ** math.ceil(math.log10(buckets[-1][0]))
    top, y_ticks = charts.linear(max(n for _, n in buckets))
    plot = charts.Plot(low, max(high, low * 10), top, log_x=True)
    rects = ((le / ratio, le, 0.0, n, "#1f6fb2") for le, n in buckets)
    latency = _dict(report.get("latency_us"))
    marks = [
        (v / 1000, f"{k} {_ms(v / 1000)} ms")
        for k in ("p50", "p99", "max")
        if (v := _num(latency.get(k)))
    ]
    labels = ("latency (ms, log scale)", "answers per bucket")
    x_ticks = charts.log_ticks(plot.x_lo, plot.x_hi)
    svg = charts.svg(plot, "Latency histogram", labels, (x_ticks, y_ticks))
    svg += charts.rects(plot, rects) + charts.vmarks(plot, marks, "#b03a2e") + "</svg>"
    return _figure("Latency histogram (every answer)", svg)


def _nines(percentile: float) -> float:
    """90 % -> 1, 99 % -> 2, 99.9 % -> 3: the x position of a percentile on the curve."""
    rest = 1 - percentile / 100
    return 5.0 if rest <= 1e-5 else -math.log10(rest)


def _curve_chart(report: dict[str, Any]) -> str:
    curve = [
        (min(5.0, _nines(p)), us / 1000)
        for c in _dicts(report.get("percentile_curve"))
        if (p := _num(c.get("percentile"))) is not None
        and (us := _num(c.get("latency_us"))) is not None
    ]
    if not curve:
        return ""
    top, y_ticks = charts.linear(max([0.001, *(ms for _, ms in curve)]))
    plot = charts.Plot(0.0, 5.0, top)
    x_ticks = [(float(i), f"{100 * (1 - 10**-i):g}%") for i in range(6)]
    labels = ("percentile", "latency (ms)")
    svg = charts.svg(plot, "Latency by percentile", labels, (x_ticks, y_ticks))
    svg += charts.line(plot, curve, "#27864a") + "</svg>"
    return _figure("Latency by percentile", svg)


def _distribution(report: dict[str, Any]) -> str:
    figures = [_histogram_chart(report), _curve_chart(report)]
    return _section("Latency distribution", *figures) if any(figures) else ""


def _kind_bars(kinds: dict[str, dict[str, Any]]) -> str:
    names, keys = sorted(kinds), ("p50", "p90", "p99")
    values = [_num(kinds[n].get(k)) for n in names for k in keys]
    top, x_ticks = charts.linear(max([0.001, *(v / 1000 for v in values if v is not None)]), 8)
    rows = len(names)
    height = charts.PAD_T + charts.PAD_B + 42 * rows
    plot = charts.Plot(0.0, top, float(rows), height=height, left=110)
    rects = []
    for i, name in enumerate(names):  # the first kind at the top: row i spans rows-i-1 to rows-i
        for j, key in enumerate(keys):
            if (v := _num(kinds[name].get(key))) is not None:
                high = rows - i - 0.2 - 0.2 * j
                rects.append((0.0, v / 1000, high - 0.18, high, _PCT[key]))
    y_ticks = [(rows - i - 0.5, name) for i, name in enumerate(names)]
    svg = charts.svg(plot, "Latency per kind", ("latency (ms)", ""), (x_ticks, y_ticks))
    svg += charts.rects(plot, rects) + "</svg>"
    return _figure("Latency per kind", svg, [(k, _PCT[k], False) for k in keys])


def _kinds(report: dict[str, Any]) -> str:
    kinds = {str(k): v for k, v in _dict(report.get("by_kind_latency_us")).items() if _dict(v)}
    if not kinds:
        return ""
    rows = [
        (name, _count(kinds[name].get("count")),
         *(_Num(_us(kinds[name].get(k))) for k in ("p50", "p90", "p99", "mean")))
        for name in sorted(kinds)
    ]  # fmt: skip
    table = _table(("kind", "answers", "p50 ms", "p90 ms", "p99 ms", "mean ms"), rows)
    return _section("Latency per kind", _kind_bars(kinds), table)


# --- capacity and rounds ---

_LIMITS = {
    "p99": "p99 latency went over its bound",
    "errors": "the error rate went over its bound",
    "throughput": "throughput fell short of the offered rate",
    "max-rate": "it reached the highest rate it was allowed to try",
}


def _capacity_text(capacity: dict[str, Any]) -> str:
    bounds = _dict(capacity.get("bounds"))
    p99, errors = _num(bounds.get("p99_ms")), _num(bounds.get("error_rate"))
    within = ", ".join(
        ([f"p99 < {_ms(p99)} ms"] if p99 is not None else [])
        + ([f"errors < {_pct(errors)}"] if errors is not None else [])
    )
    sustained = _num(capacity.get("sustained_rps"))
    found = (
        f"Sustained <b>{sustained:,.1f}/s</b>: the highest offered rate that met every bound"
        if sustained is not None
        else "No offered rate met every bound"
    )
    limit = capacity.get("limit")
    why = f" The search stopped because {_LIMITS.get(str(limit), str(limit))}." if limit else ""
    return f"<p>{found}{escape(f' ({within}).' if within else '.')}{escape(why)}</p>"


def _capacity_plot(
    steps: list[dict[str, Any]], keys: Sequence[str], extra: float
) -> tuple[charts.Plot, list[tuple[float, str]], list[tuple[float, str]]]:
    offered = max([1.0, *(_num(s.get("offered_rps")) or 0.0 for s in steps)])
    x_top, x_ticks = charts.linear(offered, 8)
    values = [_num(s.get(k)) or 0.0 for s in steps for k in keys]
    y_top, y_ticks = charts.linear(max([0.001, extra, *values]))
    return charts.Plot(0.0, x_top, y_top), x_ticks, y_ticks


def _capacity_chart(
    capacity: dict[str, Any], steps: list[dict[str, Any]], keys: Sequence[str], y_label: str
) -> str:
    """Figures of the steps against the offered rate: lines in rate order, a dot per step
    (green when it met every bound), the sustained rate marked."""
    ordered = sorted(steps, key=lambda s: _num(s.get("offered_rps")) or 0.0)
    latency = keys[0].endswith("_ms")
    bound = _num(_dict(capacity.get("bounds")).get("p99_ms")) if latency else None
    plot, x_ticks, y_ticks = _capacity_plot(steps, keys, bound or 0.0)
    colours = {"p50_ms": _PCT["p50"], "p99_ms": _PCT["p99"], "throughput_rps": "#1f6fb2"}
    ideal = min(plot.x_hi, plot.y_hi)  # answered = offered, up to where it leaves the chart
    body = [] if latency else [charts.line(plot, [(0, 0), (ideal, ideal)], "#999", dash=True)]
    for key in keys:
        pts = [(_num(s.get("offered_rps")) or 0.0, _num(s.get(key))) for s in ordered]
        dots = [(x, y, _PASS if s.get("passed") else _FAIL)
                for (x, y), s in zip(pts, ordered, strict=True) if y is not None]  # fmt: skip
        body += [charts.line(plot, pts, colours[key]), charts.dots(plot, dots)]
    body.append(charts.hmark(plot, bound, f"p99 bound {_ms(bound)} ms", _FAIL) if bound else "")
    sustained = _num(capacity.get("sustained_rps"))
    marks = [(sustained, f"sustained {sustained:,.1f}/s")] if sustained is not None else []
    title = f"{'Latency' if latency else 'Throughput'} against offered rate"
    svg = charts.svg(plot, title, ("offered rate (requests/s)", y_label), (x_ticks, y_ticks))
    svg += "".join(body) + charts.vmarks(plot, marks, _PASS) + "</svg>"
    legend = [(k.removesuffix("_ms").removesuffix("_rps"), colours[k], False) for k in keys]
    legend += [] if latency else [("offered = answered", "#999", True)]
    return _figure(title, svg, [*legend, ("step met every bound", _PASS, False),
                                ("step failed a bound", _FAIL, False)])  # fmt: skip


def _capacity(report: dict[str, Any]) -> str:
    capacity = _dict(report.get("capacity"))
    if not capacity:
        return ""
    steps = [s for s in _dicts(capacity.get("steps")) if _num(s.get("offered_rps")) is not None]
    rows = [
        (_Num(_fmt(s.get("offered_rps"), ",.1f", "/s")),
         _Num(_fmt(s.get("throughput_rps"), ",.1f", "/s")), _count(s.get("requests")),
         *(_Num(_ms(_num(s.get(k)))) for k in ("p50_ms", "p90_ms", "p99_ms")),
         _Num(_pct(s.get("error_rate"))),
         _badge(bool(s.get("passed")), "met" if s.get("passed") else "failed"),
         str(s.get("failed_bound") or ""))
        for s in steps
    ]  # fmt: skip
    header = ("offered", "throughput", "requests", "p50 ms", "p90 ms", "p99 ms", "error rate",
              "bounds", "failed bound")  # fmt: skip
    charts = (
        [
            _capacity_chart(capacity, steps, ("p50_ms", "p99_ms"), "latency (ms)"),
            _capacity_chart(capacity, steps, ("throughput_rps",), "answers per second"),
            "<h3>Steps, in the order run</h3>" + _table(header, rows),
        ]
        if steps
        else []
    )
    return _section("Capacity", _capacity_text(capacity), *charts)


def _rounds(report: dict[str, Any]) -> str:
    rounds = _dicts(report.get("rounds"))
    if not rounds:
        return ""
    rows = [
        (_count(r.get("round", i + 1)), _count(r.get("requests")),
         _Num(_fmt(r.get("elapsed_s"), ",.2f", " s")),
         _Num(_fmt(r.get("throughput_rps"), ",.1f", "/s")), _count(r.get("errors")),
         _Num(_pct(r.get("error_rate"))),
         *(_Num(_us(_dict(r.get("latency_us")).get(k))) for k in ("p50", "p90", "p99", "mean")))
        for i, r in enumerate(rounds)
    ]  # fmt: skip
    header = ("round", "requests", "elapsed", "throughput", "errors", "error rate", "p50 ms",
              "p90 ms", "p99 ms", "mean ms")  # fmt: skip
    bad = [i for i, r in enumerate(rounds) if _count(r.get("errors"))]
    return _section("Rounds", _table(header, rows, bad))


# --- outcomes and examples ---


def _outcomes(report: dict[str, Any]) -> str:
    judged = {
        (str(kind), str(outcome)): label
        for key, label in (("failed", "no answer"), ("wrong_answers", "wrong"))
        for kind, per_kind in _dict(_dict(report.get(key)).get("by_kind")).items()
        for outcome in _dict(per_kind)
    }
    counts = [
        (str(kind), str(outcome), _count(n))
        for kind, per_kind in sorted(_dict(report.get("by_kind")).items())
        for outcome, n in sorted(_dict(per_kind).items())
    ]
    if not counts:
        return ""
    total = sum(n for _, _, n in counts) or 1
    rows = [
        (k, o, n, _Num(f"{100 * n / total:.2f} %"), judged.get((k, o), "")) for k, o, n in counts
    ]
    bad = [i for i, (k, o, _) in enumerate(counts) if (k, o) in judged]
    return _section("Outcomes", _table(("kind", "outcome", "count", "share", "judged"), rows, bad))


def _examples(report: dict[str, Any]) -> str:
    keys = ("class", "kind", "request_id", "expected", "got", "detail", "qr")
    examples = _dicts(report.get("examples"))
    rows = [tuple(str(e.get(k, "")) for k in keys) for e in examples]
    header = ("class", "kind", "request", "expected", "got", "detail", "qr")
    body = _table(header, rows) if rows else "<p>none</p>"
    return _section("Wrong answers and unanswered requests (examples)", body)


def render_html(report: dict[str, Any]) -> str:
    """The page of one run from its JSON (to_json): every section whose data the run has."""
    meta = _dict(report.get("metadata"))
    title = "txverify load report" + (
        f" {meta['started_bangkok']}" if meta.get("started_bangkok") else ""
    )
    sections = (
        _summary, _thresholds, _client, _over_time, _stages, _distribution, _kinds, _capacity,
        _rounds, _outcomes, _examples,
    )  # fmt: skip
    body = "\n".join(s for s in (section(report) for section in sections) if s)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>
<meta name="viewport" content="width=device-width,initial-scale=1">
<style>{_CSS}</style></head><body>
{_header(report)}
{body}
</body></html>
"""
