"""A load run for other tools: CSV per second and per request, and the summary in the
Prometheus text exposition format (to push to a Pushgateway, or to scrape from a file)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

REQUEST_COLUMNS = (
    "round", "process", "seq", "request_id", "kind", "scheduled_s", "sent_s", "latency_ms",
    "outcome", "judged", "origin",
)  # fmt: skip
_SECOND_COLUMNS = (
    "second", "stage", "offered", "sent", "completed", "errors", "p50_ms", "p90_ms", "p99_ms",
    "mean_ms", "send_lag_p99_ms",
)  # fmt: skip


def seconds_csv(report: dict[str, Any]) -> str:
    """One row per second of `report["timeseries"]`; then a column per outcome."""
    rows = report.get("timeseries") or []
    outcomes = sorted({o for r in rows for o in r["by_outcome"]})
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*_SECOND_COLUMNS, *outcomes])
    for r in rows:
        stage = None if r["stage"] is None else r["stage"] + 1  # numbered as in thresholds
        cells = [stage if c == "stage" else r[c] for c in _SECOND_COLUMNS]
        writer.writerow(
            [
                *("" if v is None else v for v in cells),
                *(r["by_outcome"].get(o, 0) for o in outcomes),
            ]
        )
    return out.getvalue()


def merge_request_parts(target: Path, parts: Iterable[Path]) -> int:
    """The load processes' rows (each wrote its own part) into one file, by send time; the
    parts removed. Returns the number of rows."""
    rows: list[list[str]] = []
    for part in parts:
        if part.exists():
            with part.open(encoding="utf-8", newline="") as f:
                rows += list(csv.reader(f))
            part.unlink()
    rows.sort(key=lambda r: (int(r[0]), float(r[5])))  # round, then the scheduled send
    with target.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(REQUEST_COLUMNS)
        writer.writerows(rows)
    return len(rows)


def _label(value: object) -> str:
    text = str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return f'"{text}"'


def _metric(name: str, kind: str, help_text: str, samples: Sequence[tuple[str, float]]) -> str:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    lines += [f"{name}{labels} {_number(value)}" for labels, value in samples]
    return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


def prometheus_text(report: dict[str, Any]) -> str:
    """The summary as text exposition format 0.0.4: counters by kind and outcome, the
    latency summary in seconds, throughput, the client's own failures, thresholds."""
    latency = report["latency_us"]
    quantiles = [
        (f'{{quantile="{float(k[1:]) / 100:g}"}}', latency[k] / 1e6)
        for k in ("p50", "p90", "p99", "p99.9")
        if k in latency
    ]
    total_s = latency.get("mean", 0) * report["requests"] / 1e6
    parts = [
        _metric(
            "txverify_load_requests_total",
            "counter",
            "Requests sent, by slip kind and outcome.",
            [
                (f"{{kind={_label(k)},outcome={_label(o)}}}", n)
                for k, outcomes in sorted(report["by_kind"].items())
                for o, n in outcomes.items()
            ],
        ),
        _metric(
            "txverify_load_latency_seconds",
            "summary",
            "Latency from each scheduled send.",
            [*quantiles, ("_sum", round(total_s, 6)), ("_count", report["requests"])],
        ),
        _metric(
            "txverify_load_throughput_rps",
            "gauge",
            "Answers per second over the run.",
            [("", float(report["throughput_rps"]))],
        ),
        _metric(
            "txverify_load_wrong_answers_total",
            "counter",
            "Answers that were not what the slip's kind must get.",
            [("", report["wrong_answers"]["count"])],
        ),
        _metric(
            "txverify_load_errors_total",
            "counter",
            "Wrong answers and requests without one.",
            [("", report["errors"])],
        ),
    ]
    client = report.get("client") or {}
    ended = [(k, client[k]) for k in ("answered", "timed_out", "cancelled", "not_sent",
                                      "transport") if k in client]  # fmt: skip
    if ended:
        parts.append(_metric(
            "txverify_load_requests_ended_total", "counter",
            "Requests by who ended them: the hub (answered) or the client.",
            [(f"{{by={_label(k)}}}", n) for k, n in ended],
        ))  # fmt: skip
    if report.get("thresholds"):
        parts.append(_metric(
            "txverify_load_threshold_passed", "gauge", "1 when the threshold passed, else 0.",
            [(f"{{expression={_label(t['expression'])},scope={_label(t['scope'])}}}",
              int(t["passed"])) for t in report["thresholds"]],
        ))  # fmt: skip
    return "".join(parts)
