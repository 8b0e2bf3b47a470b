"""`txverify load compare A.json B.json`: the comparison (compare.py) as a table and a
summary line, or as JSON, and its exit code."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from txverify.cli.common import EXIT_BAD_INPUT, err
from txverify.cli.load.compare import (
    BETTER,
    WITHIN,
    Comparison,
    Figure,
    ReportError,
    compare,
    read_report,
)

out = Console()

EXIT_WORSE = 3  # --fail-on-worse: some figure of B is worse beyond the spread
NOTE = "run both with --rounds N (N >= 3) for a verdict against the round-to-round spread"


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
