"""The HTML page of a load run, rendered from its JSON: self-contained, complete, escaped."""

from __future__ import annotations

import re
from typing import Any

import pytest

from txverify.cli.load.html import render_html

HOSTILE = "<script>alert(1)</script>"
STAGE_LABELS = ("stage 1: 0→100/s", "stage 2: 100/s", "stage 3: 100→200/s")  # from 1, as thresholds
CHARTS = (
    "Answers per second",
    "Latency over time",
    "Latency histogram",
    "Latency by percentile",
    "Latency per kind",
    "Latency against offered rate",
    "Throughput against offered rate",
)


def _latency(p50: float, *, stddev: bool = True) -> dict[str, float]:
    figures = {"p50": p50, "p90": p50 * 1.5, "p99": p50 * 4, "p99.9": p50 * 8,
               "max": p50 * 20, "min": p50 / 4, "mean": p50 * 1.2}  # fmt: skip
    return figures | ({"stddev": p50 * 0.8} if stddev else {})


def _second(i: int) -> dict[str, Any]:
    offered = min(100, 5 * i) if i < 10 else 100 if i < 20 else 100 + 10 * (i - 20)
    wrong = 1 if i == 25 else 0
    return {
        "second": i, "offered": offered, "sent": offered, "completed": offered,
        "errors": wrong, "stage": 0 if i < 10 else 1 if i < 20 else 2,
        "by_outcome": {"OK/VALID": offered - 10 - wrong, "NOT_FOUND/SLIP_NOT_FOUND": 5,
                       "OK/DUPLICATE": 5, "DEADLINE_EXCEEDED": wrong},
        "p50_ms": 2.0 + i / 30, "p90_ms": 3.0 + i / 20, "p99_ms": 8.0 + i / 3,
        "mean_ms": 2.4 + i / 30, "send_lag_p99_ms": 0.3,
    } if offered else {
        "second": i, "offered": 0, "sent": 0, "completed": 0, "errors": 0, "stage": 0,
        "by_outcome": {}, "p50_ms": None, "p90_ms": None, "p99_ms": None, "mean_ms": None,
        "send_lag_p99_ms": None,
    }  # fmt: skip


def _stage(index: int, start: float, low: float, high: float) -> dict[str, Any]:
    return {
        "index": index, "start_s": start, "end_s": start + 10, "unit": "rate", "from": low,
        "to": high, "requests": int(5 * (low + high)), "throughput_rps": (low + high) / 2,
        "errors": int(index == 2), "error_rate": 0.0007 * (index == 2),
        "latency_us": _latency(2000 + 500 * index),
    }  # fmt: skip


def _step(offered: float, p99_ms: float, passed: bool) -> dict[str, Any]:
    return {
        "offered_rps": offered, "throughput_rps": min(offered, 900.0) * 0.998,
        "requests": int(offered * 10), "p50_ms": p99_ms / 4, "p90_ms": p99_ms / 2,
        "p99_ms": p99_ms, "error_rate": 0.0, "passed": passed,
        "failed_bound": "" if passed else "p99",
    }  # fmt: skip


def _threshold(expression: str, scope: str, measured: float, passed: bool) -> dict[str, Any]:
    return {"expression": expression, "scope": scope, "metric": "p99", "op": "<",
            "bound": 10.0, "unit": "ms", "measured": measured, "passed": passed}  # fmt: skip


def old_report() -> dict[str, Any]:
    """What `--json` wrote before M13: only these keys."""
    return {
        "settings": {"hub": "127.0.0.1:50051", "member": "002", "mtls": False, "mode": "open",
                     "rate": 100.0, "concurrency": None, "duration": 30.0, "requests": None,
                     "connections": 2, "procs": 2, "mix": {"valid": 80, "notfound": 10},
                     "timeout": 10.0, "check": True, "run_id": "r1",
                     "slips": {"valid": 100}},
        "processes": 2, "requests": 3000, "elapsed_s": 30.4, "throughput_rps": 98.7,
        "latency_us": _latency(2100, stddev=False),
        "outcomes": {"OK/VALID": 2700, "NOT_FOUND/SLIP_NOT_FOUND": 299, "DEADLINE_EXCEEDED": 1},
        "by_status": {"OK": 2700, "NOT_FOUND": 299, "DEADLINE_EXCEEDED": 1},
        "by_reason": {"VALID": 2700, "SLIP_NOT_FOUND": 299, "DEADLINE_EXCEEDED": 1},
        "by_kind": {"valid": {"OK/VALID": 2700, "NOT_FOUND/SLIP_NOT_FOUND": 1,
                              "DEADLINE_EXCEEDED": 1},
                    "notfound": {"NOT_FOUND/SLIP_NOT_FOUND": 298}},
        "errors": 2,
        "wrong_answers": {"count": 1, "by_kind": {"valid": {"NOT_FOUND/SLIP_NOT_FOUND": 1}}},
        "failed": {"count": 1, "by_kind": {"valid": {"DEADLINE_EXCEEDED": 1}}},
        "examples": [{"class": "wrong", "kind": "valid", "qr": "014:Q", "request_id": "r-7",
                      "expected": "OK/VALID", "got": "NOT_FOUND/SLIP_NOT_FOUND",
                      "detail": "no such slip"}],
        "client_cpu_s": 12.0, "send_lag_max_ms": 3.0, "exit_code": 1,
        "timeline": [{"second": i, "completed": 100, "errors": int(i == 25),
                      "mean_latency_ms": 2.4} for i in range(30)],
        "percentile_curve": [{"percentile": 100 * (1 - 10 ** (-i / 10)), "latency_us": 2000 + i}
                             for i in range(51)] + [{"percentile": 100.0, "latency_us": 42000}],
    }  # fmt: skip


def report() -> dict[str, Any]:
    """A run of every M13 key: three rate stages over 30 s, thresholds, capacity, rounds."""
    return old_report() | {
        "schema": 2,
        "metadata": {
            "txverify_version": "0.13.0", "git_commit": "abc1234def5678",
            "started_utc": "2026-12-03T18:40:00.123+00:00",
            "started_bangkok": "2026-12-04T01:40:00.123+07:00",
            "host": {"hostname": "loadbox", "cores": 2, "python": "3.11.7",
                     "platform": "Linux-6.1-x86_64"},
            "hub": "127.0.0.1:50051",
            "argv": ["txverify", "load", "--stage", "10s:0-100", "--threshold", "p99<10ms"],
        },
        "latency_us": _latency(2100),
        "histogram": [{"le_us": round(10 ** (b / 10), 1), "count": 10 * (40 - abs(b - 33))}
                      for b in range(28, 47)],
        "timeseries": [_second(i) for i in range(30)],
        "stages": [_stage(0, 0.0, 0, 100), _stage(1, 10.0, 100, 100), _stage(2, 20.0, 100, 200)],
        "thresholds": [_threshold("p99<10ms", "run", 8.4, True),
                       _threshold("stage2:p99<10ms", "stage 2", 14.5, False)],
        "client": {
            "answered": 2950, "timed_out": 30, "cancelled": 10, "not_sent": 10,
            "send_lag_ms": {"p50": 0.1, "p99": 0.9, "max": 3.0},
            "cpu_s": 12.0, "cpu_per_process": [6.0, 6.0], "cores_busy_per_process": [0.95, 0.4],
            "saturated": True, "note": "the load source was the bottleneck: process 1 at 95 %",
        },
        "by_kind_latency_us": {
            "valid": {"count": 2700, "p50": 2100, "p90": 3000, "p99": 8000, "mean": 2400},
            "notfound": {"count": 298, "p50": 1500, "p90": 2200, "p99": 6000, "mean": 1700},
        },
        "rounds": [{"round": r, "requests": 1000, "elapsed_s": 10.1, "throughput_rps": 99.0,
                    "errors": int(r == 3), "error_rate": 0.001 * (r == 3),
                    "latency_us": {"p50": 2000 + r, "p90": 3000, "p99": 8000, "mean": 2400}}
                   for r in (1, 2, 3)],
        "capacity": {
            "bounds": {"p99_ms": 50.0, "error_rate": 0.01}, "sustained_rps": 800.0,
            "limit": "p99",
            "steps": [_step(200, 8, True), _step(400, 10, True), _step(800, 20, True),
                      _step(1600, 90, False), _step(1200, 60, False)],
        },
    }  # fmt: skip


def test_page_is_one_document_that_fetches_nothing() -> None:
    page = render_html(report())

    assert page.startswith("<!doctype html>")
    assert 1 == page.count("<html") == page.count("</html>")
    assert "http://" not in page
    assert "https://" not in page
    assert [] == [m for m in re.findall(r"src\s*=\s*[\"']?([^\"'\s>]*)", page)
                  if not m.startswith("data:")]  # fmt: skip
    assert "<script" not in page
    assert re.search(r"<link[^>]*stylesheet", page) is None


def test_every_chart_is_an_inline_svg() -> None:
    page = render_html(report())

    assert len(CHARTS) == page.count("<svg")
    for title in CHARTS:
        assert f'aria-label="{title}"' in page


def test_stage_boundaries_are_labelled_on_both_time_charts() -> None:
    page = render_html(report())

    for label in STAGE_LABELS:
        assert 2 == page.count(f">{label}</text>"), label


def row_of(page: str, text: str) -> tuple[bool, list[str]]:
    """The table row holding `text`: whether it is marked bad, and its cells' text."""
    row = next(r for r in re.findall(r"<tr[^>]*>.*?</tr>", page) if text in r)
    cells = [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row)]
    return row.startswith("<tr class=bad>"), cells


def test_thresholds_show_verdict_expression_scope_measured_and_bound() -> None:
    page = render_html(report())

    assert (False, ["pass", "p99&lt;10ms", "run", "8.4 ms", "&lt; 10 ms"]) == row_of(
        page, "<code>p99&lt;10ms</code>"
    )
    assert (True, ["fail", "stage2:p99&lt;10ms", "stage 2", "14.5 ms", "&lt; 10 ms"]) == row_of(
        page, "<code>stage2:p99&lt;10ms</code>"
    )
    assert "1 of 2 thresholds failed" in page


def test_header_has_both_start_times_and_the_command_line() -> None:
    page = render_html(report())

    assert "2026-12-04T01:40:00.123+07:00" in page
    assert "2026-12-03T18:40:00.123+00:00" in page
    assert "txverify load --stage 10s:0-100 --threshold &#x27;p99&lt;10ms&#x27;" in page
    assert "abc1234def5678" in page
    assert "loadbox · 2 cores" in page


def test_client_failures_are_told_apart_from_the_hubs_answers() -> None:
    page = render_html(report())

    for name, count in (("answered by the hub", "2,950"), ("timed out", "30"),
                        ("cancelled", "10"), ("not sent", "10")):  # fmt: skip
        assert re.search(f'<td>{name}</td><td class="n">{count}</td>', page), name
    assert "Load source saturated: the load source was the bottleneck: process 1 at 95 %" in page
    assert "p50 0.100 ms · p99 0.900 ms · max 3.00 ms" in page
    assert "95 % of a core" in page


def test_capacity_marks_the_sustained_rate() -> None:
    page = render_html(report())

    assert 2 == page.count(">sustained 800.0/s</text>")
    assert "p99 latency went over its bound" in page


def test_pre_m13_report_renders_what_it_has() -> None:
    page = render_html(old_report())

    assert "Answers per second" in page
    assert "Latency by percentile" in page
    assert "no such slip" in page
    assert "Thresholds" not in page
    assert "Capacity" not in page


def test_report_with_new_keys_empty_or_null_renders() -> None:
    empty: dict[str, Any] = {
        "metadata": {}, "histogram": [], "timeseries": [], "stages": [], "thresholds": [],
        "client": {}, "by_kind_latency_us": {}, "rounds": [], "capacity": None,
    }  # fmt: skip

    page = render_html(old_report() | empty)

    assert "<svg" in page


@pytest.mark.parametrize("key", sorted(report()))
def test_report_with_any_key_null_renders(key: str) -> None:
    assert "</html>" in render_html(report() | {key: None})


def test_empty_dict_renders_a_page() -> None:
    assert "</html>" in render_html({})


def test_hostile_text_comes_out_escaped() -> None:
    hostile = report()
    hostile["settings"]["member"] = HOSTILE
    hostile["examples"][0]["detail"] = HOSTILE
    hostile["metadata"]["argv"].append(HOSTILE)
    hostile["thresholds"][0]["expression"] = HOSTILE

    page = render_html(hostile)

    assert "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
