"""`txverify load compare`: two load reports side by side, verdicts against the round spread."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner, Result

from txverify.cli.common import EXIT_BAD_INPUT
from txverify.cli.load.compare import (
    BETTER,
    WITHIN,
    WORSE,
    Comparison,
    Figure,
    compare,
    verdict,
)
from txverify.cli.load.compare_cmd import EXIT_WORSE, NOTE, compare_command

SETTINGS = {"mix": {"valid": 80, "bad": 20}, "rate": 0.0, "concurrency": 16, "duration": 10.0}


def round_of(throughput: float, p50_us: float, errors: int = 0) -> dict[str, Any]:
    latency = {"p50": p50_us, "p90": p50_us * 2, "p99": p50_us * 4, "mean": p50_us * 1.2}
    return {
        "round": 1,
        "requests": 1000,
        "elapsed_s": 1.0,
        "throughput_rps": throughput,
        "errors": errors,
        "error_rate": errors / 1000,
        "latency_us": latency,
    }


def report(
    throughput: float = 1000.0,
    p50_us: float = 2000.0,
    rounds: Sequence[tuple[float, float]] = (),
    **overrides: Any,
) -> dict[str, Any]:
    """A report as `txverify load --json` writes it (schema 2), its rounds (throughput, p50)."""
    latency = {"p50": p50_us, "p90": p50_us * 2, "p99": p50_us * 4, "p99.9": p50_us * 8}
    latency |= {"max": p50_us * 10, "min": 100, "mean": p50_us * 1.2, "stddev": 300.0}
    base = {
        "schema": 2,
        "settings": {**SETTINGS, "procs": 1},
        "metadata": {"txverify_version": "0.1.0", "git_commit": None},
        "requests": 10000,
        "throughput_rps": throughput,
        "latency_us": latency,
        "outcomes": {"OK/VALID": 8000, "INVALID_ARGUMENT/BAD_QR": 2000},
        "errors": 10,
        "wrong_answers": {"count": 4, "by_kind": {}},
        "failed": {"count": 6, "by_kind": {}},
        "rounds": [round_of(t, p) for t, p in rounds],
    }
    return base | overrides


def figure(c: Comparison, name: str) -> Figure:
    return next(f for f in c.figures if f.name == name)


def invoke(tmp_path: Path, a: object, b: object, *flags: str) -> Result:
    app = typer.Typer()
    app.command()(compare_command)
    paths = []
    for name, content in (("a.json", a), ("b.json", b)):
        path = tmp_path / name
        if content is not None:
            text = content if isinstance(content, str) else json.dumps(content)
            path.write_text(text, encoding="utf-8")
        paths.append(str(path))
    return CliRunner(env={"COLUMNS": "200"}).invoke(app, [*paths, *flags])


SLOW = report(1000.0, 2000.0, rounds=[(980.0, 2050.0), (1000.0, 2000.0), (1020.0, 1950.0)])
FAST = report(1200.0, 1400.0, rounds=[(1180.0, 1450.0), (1200.0, 1400.0), (1220.0, 1350.0)])
NEAR = report(1010.0, 1990.0, rounds=[(1000.0, 2010.0), (1010.0, 1990.0), (1030.0, 1960.0)])


# --- verdict ---


@pytest.mark.parametrize(
    ("rounds_a", "rounds_b", "higher_is_better", "expected"),
    [
        ([10, 12], [13, 14], True, BETTER),
        ([10, 12], [13, 14], False, WORSE),
        ([10, 12], [7, 9], False, BETTER),
        ([10, 12], [7, 9], True, WORSE),
        ([10, 12], [11, 14], True, WITHIN),
        ([10, 12], [12, 14], True, WITHIN),  # touching ranges overlap
    ],
)
def test_verdict_counts_a_difference_only_beyond_the_spread(
    rounds_a: list[float], rounds_b: list[float], higher_is_better: bool, expected: str
) -> None:
    assert expected == verdict(rounds_a, rounds_b, higher_is_better)


def test_verdict_needs_two_rounds_of_each_run() -> None:
    with pytest.raises(ValueError, match="2 rounds"):
        verdict([10.0], [13.0, 14.0], True)


# --- compare ---


def test_b_clearly_faster_beyond_the_spread_is_b_better_for_throughput_and_latency() -> None:
    c = compare(SLOW, FAST)

    assert {"throughput": BETTER, "p50": BETTER, "p99": BETTER, "mean": BETTER} == {
        name: figure(c, name).verdict for name in ("throughput", "p50", "p99", "mean")
    }
    assert (980.0, 1020.0) == figure(c, "throughput").spread_a
    assert 20.0 == pytest.approx(figure(c, "throughput").relative)
    assert figure(c, "p50").improved
    assert not c.worse


def test_b_slower_beyond_the_spread_is_b_worse() -> None:
    c = compare(FAST, SLOW)

    assert WORSE == figure(c, "throughput").verdict
    assert WORSE == figure(c, "p99").verdict
    assert c.worse


def test_overlapping_rounds_are_within_spread() -> None:
    c = compare(SLOW, NEAR)

    assert WITHIN == figure(c, "throughput").verdict
    assert WITHIN == figure(c, "p50").verdict
    assert not c.worse


def test_figures_the_rounds_do_not_carry_get_no_verdict() -> None:
    c = compare(SLOW, FAST)

    assert [None, None, None] == [figure(c, n).verdict for n in ("p99.9", "max", "wrong answers")]


def test_without_rounds_in_both_there_is_no_verdict() -> None:
    c = compare(report(1000.0), FAST)

    assert not c.judged
    assert all(f.verdict is None and f.spread_a is None for f in c.figures)


def test_every_figure_is_in_display_units() -> None:
    c = compare(report(), report(1100.0, 3000.0))

    p99 = figure(c, "p99")
    assert (8.0, 12.0, 4.0, 50.0) == (p99.a, p99.b, p99.change, p99.relative)
    assert 0.1 == pytest.approx(figure(c, "error rate").a)
    assert 4.0 == figure(c, "wrong answers").a
    assert 80.0 == figure(c, "OK/VALID share").a


def test_outcome_shares_cover_both_runs_outcomes() -> None:
    only_b = report(outcomes={"OK/VALID": 9000, "NOT_FOUND/SLIP_NOT_FOUND": 1000})

    c = compare(report(), only_b)

    shares = {f.name: (f.a, f.b) for f in c.figures if f.name.endswith(" share")}
    assert {
        "INVALID_ARGUMENT/BAD_QR share": (20.0, 0.0),
        "NOT_FOUND/SLIP_NOT_FOUND share": (0.0, 10.0),
        "OK/VALID share": (80.0, 90.0),
    } == shares


def test_old_style_reports_compare_what_both_have() -> None:
    old = {
        "settings": SETTINGS,
        "requests": 5000,
        "throughput_rps": 500.0,
        "latency_us": {"p50": 1000, "p90": 2000, "p99": 4000, "max": 9000, "min": 10, "mean": 1100},
        "errors": 0,
    }

    c = compare(old, FAST)

    expected = ["throughput", "p50", "p90", "p99", "mean", "max", "error rate"]
    assert expected == [f.name for f in c.figures]
    assert (0, 3) == (c.rounds_a, c.rounds_b)
    assert not c.judged


def test_differing_settings_are_named() -> None:
    other = report(settings={**SETTINGS, "rate": 500.0, "concurrency": None, "procs": 2})

    c = compare(report(), other)

    assert [("rate", 0.0, 500.0), ("concurrency", 16, None), ("procs", 1, 2)] == [
        (d.name, d.a, d.b) for d in c.differences
    ]


# --- the command ---


def test_table_shows_verdicts_and_a_summary_line(tmp_path: Path) -> None:
    result = invoke(tmp_path, SLOW, FAST)

    assert 0 == result.exit_code, result.output
    assert "B better" in result.stdout
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.startswith("B vs A: throughput +20.0% (better, beyond the spread of 3 rounds")
    assert "p99 -30.0% (better, beyond)" in summary
    assert NOTE not in result.stdout


def test_without_rounds_the_table_has_no_verdicts_and_the_note(tmp_path: Path) -> None:
    result = invoke(tmp_path, report(), report(1200.0))

    assert 0 == result.exit_code, result.output
    assert f"note: {NOTE}" == result.stdout.strip().splitlines()[-1]
    assert "A rounds" not in result.stdout
    assert "within spread" not in result.stdout
    assert "throughput" in result.stdout


def test_differing_settings_warn_in_one_line(tmp_path: Path) -> None:
    result = invoke(tmp_path, report(), report(settings={**SETTINGS, "procs": 2}))

    assert 0 == result.exit_code, result.output
    assert [
        "warning: the runs' settings differ, comparing unlike loads: procs 1 vs 2"
    ] == result.stderr.splitlines()


def test_alike_settings_warn_of_nothing(tmp_path: Path) -> None:
    result = invoke(tmp_path, SLOW, FAST)

    assert "" == result.stderr


@pytest.mark.parametrize(
    ("a", "problem"),
    [
        (None, "a.json: no such file"),
        ("{not json", "a.json: not JSON (Expecting property name"),
        ({"requests": 10}, "a.json: not a txverify load report (no throughput_rps)"),
        ([1, 2], "a.json: not a txverify load report (no throughput_rps)"),
    ],
)
def test_a_file_that_is_not_a_report_exits_2_saying_which_and_why(
    tmp_path: Path, a: object, problem: str
) -> None:
    result = invoke(tmp_path, a, FAST)

    assert EXIT_BAD_INPUT == result.exit_code
    lines = result.stderr.splitlines()
    assert 1 == len(lines), result.stderr
    assert problem in lines[0]
    assert "" == result.stdout


def test_fail_on_worse_exits_3_when_b_is_worse(tmp_path: Path) -> None:
    result = invoke(tmp_path, FAST, SLOW, "--fail-on-worse")

    assert EXIT_WORSE == result.exit_code, result.output
    assert "B worse" in result.stdout


def test_worse_without_fail_on_worse_exits_0(tmp_path: Path) -> None:
    assert 0 == invoke(tmp_path, FAST, SLOW).exit_code


def test_fail_on_worse_exits_0_within_spread(tmp_path: Path) -> None:
    assert 0 == invoke(tmp_path, SLOW, NEAR, "--fail-on-worse").exit_code


def test_json_output_has_every_figure_with_its_verdict(tmp_path: Path) -> None:
    result = invoke(tmp_path, SLOW, FAST, "--json")

    assert 0 == result.exit_code, result.output
    data = json.loads(result.stdout)
    throughput = data["figures"][0]
    assert {
        "figure": "throughput",
        "unit": "req/s",
        "better": "higher",
        "a": 1000.0,
        "b": 1200.0,
        "change": 200.0,
        "relative": 20.0,
        "spread_a": [980.0, 1020.0],
        "spread_b": [1180.0, 1220.0],
        "verdict": BETTER,
    } == throughput
    assert {"a": 3, "b": 3} == data["rounds"]
    assert BETTER == next(f for f in data["figures"] if f["figure"] == "p99")["verdict"]
    assert "" == data["note"]


def test_json_output_without_rounds_has_the_note_and_no_verdicts(tmp_path: Path) -> None:
    result = invoke(tmp_path, report(), report(1200.0), "--json")

    data = json.loads(result.stdout)
    assert NOTE == data["note"]
    assert {None} == {f["verdict"] for f in data["figures"]}
