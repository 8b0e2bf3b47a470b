"""`txverify load compare A.json B.json`: two load runs side by side, figure by figure; with
rounds in both, a verdict only where B is beyond A's round-to-round spread."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from txverify.cli.common import EXIT_BAD_INPUT, err

out = Console()

EXIT_WORSE = 3  # --fail-on-worse: some figure of B is worse beyond the spread
BETTER = "B better"
WORSE = "B worse"
WITHIN = "within spread"
NOTE = "run both with --rounds N (N >= 3) for a verdict against the round-to-round spread"
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


# --- as text and JSON ---


def _number(value: float, unit: str, *, sign: bool = False) -> str:
    places = {"req/s": 1, "ms": 3, "%": 2}.get(unit, 0)
    return f"{value:{'+' if sign else ''},.{places}f}"


def _change_text(f: Figure) -> str:
    if f.relative is None:  # A is 0: the change itself ("pp": percentage points)
        unit = "pp" if f.unit == "%" else f.unit
        return f"{_number(f.change, f.unit, sign=True)} {unit}".rstrip()
    return f"{f.relative:+.1f}%"


def _rounds_text(c: Comparison) -> str:
    if c.rounds_a == c.rounds_b:
        return f"{c.rounds_a} rounds each"
    return f"{c.rounds_a} and {c.rounds_b} rounds"


def _judgement(f: Figure, spread: str) -> str:
    if f.verdict == WITHIN:
        return f"within {spread or 'spread'}"
    way = "better" if f.verdict == BETTER else "worse"
    return f"{way}, beyond {spread}".rstrip()


def summary(c: Comparison) -> str:
    """One line: every judged figure's change and verdict; "" when none is judged."""
    judged = [f for f in c.figures if f.verdict]
    if not judged:
        return ""
    spreads = [f"the spread of {_rounds_text(c)}"] + [""] * (len(judged) - 1)
    parts = [
        f"{f.name} {_change_text(f)} ({_judgement(f, spread)})"
        for f, spread in zip(judged, spreads, strict=True)
    ]
    return "B vs A: " + "; ".join(parts)


def warning(c: Comparison) -> str:
    """One line naming the settings that differ; "" when none does."""
    if not c.differences:
        return ""
    what = "; ".join(f"{d.name} {_setting(d.a)} vs {_setting(d.b)}" for d in c.differences)
    return f"warning: the runs' settings differ, comparing unlike loads: {what}"


def _setting(value: Any) -> str:
    if isinstance(value, Mapping):
        return ",".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:g}"
    return "none" if value is None else str(value)


def _label(f: Figure) -> str:
    arrow = {"higher": " ↑", "lower": " ↓"}.get(f.better, "")
    return escape(f"{f.name} ({f.unit})" if f.unit else f.name) + arrow


def _coloured(text: str, good: bool | None) -> str:
    return escape(text) if good is None else f"[{'green' if good else 'red'}]{escape(text)}[/]"


def _spread_text(spread: tuple[float, float] | None, unit: str) -> str:
    return "" if spread is None else f"{_number(spread[0], unit)} - {_number(spread[1], unit)}"


def _cells(f: Figure, judged: bool) -> list[str]:
    cells = [
        _label(f),
        _number(f.a, f.unit),
        _number(f.b, f.unit),
        _coloured(_number(f.change, f.unit, sign=True), f.improved),
        _coloured("" if f.relative is None else f"{f.relative:+.1f}%", f.improved),
    ]
    if judged:
        good = None if f.verdict in (None, WITHIN) else f.verdict == BETTER
        verdict_cell = _coloured(f.verdict or "", good)
        cells += [_spread_text(f.spread_a, f.unit), _spread_text(f.spread_b, f.unit), verdict_cell]
    return cells


def table(c: Comparison, title: str) -> Table:
    caption = "↑ higher is better, ↓ lower is better"
    t = Table(title=title, title_justify="left", caption=caption, caption_justify="left")
    t.add_column("figure")
    for name in ("A", "B", "change", "relative"):
        t.add_column(name, justify="right")
    if c.judged:
        for name in ("A rounds", "B rounds"):
            t.add_column(name, justify="right")
        t.add_column("verdict")
    for f in c.figures:
        t.add_row(*_cells(f, c.judged))
    return t


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def figure_dict(f: Figure) -> dict[str, Any]:
    return {
        "figure": f.name,
        "unit": f.unit,
        "better": f.better or None,
        "a": f.a,
        "b": f.b,
        "change": _rounded(f.change),
        "relative": _rounded(f.relative),
        "spread_a": None if f.spread_a is None else list(f.spread_a),
        "spread_b": None if f.spread_b is None else list(f.spread_b),
        "verdict": f.verdict,
    }


def to_dict(c: Comparison) -> dict[str, Any]:
    return {
        "rounds": {"a": c.rounds_a, "b": c.rounds_b},
        "settings_differ": [{"setting": d.name, "a": d.a, "b": d.b} for d in c.differences],
        "figures": [figure_dict(f) for f in c.figures],
        "summary": summary(c),
        "note": "" if c.judged else NOTE,
    }


# --- the command ---


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


def _show(c: Comparison, title: str) -> None:
    out.print(table(c, title))
    print(summary(c) if c.judged else f"note: {NOTE}")


def compare_command(
    a: Annotated[Path, typer.Argument(help="The first run (`txverify load --json A.json`).")],
    b: Annotated[Path, typer.Argument(help="The run to compare with it.")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the comparison as JSON instead of a table.")
    ] = False,
    fail_on_worse: Annotated[
        bool, typer.Option("--fail-on-worse", help="Exit 3 when B is worse beyond the spread.")
    ] = False,
) -> None:
    """Compare two runs of `txverify load --json FILE`, B against A; with --rounds in both, a
    verdict where B is beyond A's round-to-round spread. Exit 2 when a file is not a report."""
    try:
        report_a, report_b = read_report(a), read_report(b)
    except ReportError as exc:
        err.print(f"[red]{escape(str(exc))}[/]")
        raise typer.Exit(EXIT_BAD_INPUT) from None
    c = compare(report_a, report_b)
    if line := warning(c):
        err.print(f"[yellow]{escape(line)}[/]")
    if as_json:
        print(json.dumps({"a": str(a), "b": str(b), **to_dict(c)}, indent=2))
    else:
        _show(c, f"B = {b} vs A = {a}")
    raise typer.Exit(EXIT_WORSE if fail_on_worse and c.worse else 0)
