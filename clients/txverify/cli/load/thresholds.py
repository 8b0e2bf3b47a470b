"""Thresholds CI can act on: `--threshold 'p99<50ms' --threshold 'errors<0.1%'`.

    [stageN:]METRIC OP VALUE[UNIT]        OP: <  <=  >  >=

    latency   p50 p90 p99 p99.9 (any pNN), mean, min, max, stddev    units ms (default), us, s
              (read from the run's HdrHistogram: to 0.1 %, rounded up)
    errors    wrong answers and requests without one: a count, or with % a share of requests
    wrong     wrong answers only (count, or %);  failed: requests without an answer (count, %)
    rate      throughput, answers per second (also `throughput`, `rps`; unit /s optional)
    requests  requests sent

Each is judged on the whole run, or with `stageN:` (N from 1, as the --stage flags were
given; the steps of --find-capacity likewise) on that stage alone. `txverify load`
exits 3 when any fails (1 still wins: a wrong answer is worse than a slow one).
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from txverify.cli.load.results import Figures

_FORM = re.compile(
    r"\s*(?:stage\s*(?P<stage>\d+)\s*:)?\s*(?P<metric>[a-z]+[\d.]*)\s*(?P<op><=|>=|<|>)"
    r"\s*(?P<value>\d+(?:\.\d+)?)\s*(?P<unit>ms|us|µs|s|%|/s)?\s*",
    re.IGNORECASE,
)
_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_LATENCY = {"mean", "avg", "min", "max", "stddev", "med"}
_COUNTS = {"errors", "wrong", "failed", "requests"}
_RATE = {"rate", "throughput", "rps"}
_US_PER = {"us": 1.0, "µs": 1.0, "ms": 1000.0, "s": 1_000_000.0}
HELP = (
    "[stageN:]METRIC OP VALUE[UNIT]: METRIC p50, p90, p99, p99.9, mean, min, max, stddev (ms, "
    "us, s), errors, wrong, failed (a count, or %), rate (/s), requests; OP <, <=, >, >="
)


class ThresholdError(ValueError):
    """A threshold is written wrong; the message names it and shows the form."""


@dataclass(frozen=True, slots=True)
class Threshold:
    expression: str
    metric: str  # p50, p99.9, mean, min, max, stddev, errors, wrong, failed, rate, requests
    op: str
    bound: float
    unit: str  # ms, us, s, %, /s or "" (a count)
    stage: int | None = None  # from 1; None: the whole run

    @property
    def scope(self) -> str:
        return "run" if self.stage is None else f"stage {self.stage}"


def parse_threshold(text: str) -> Threshold:
    m = _FORM.fullmatch(text)
    if not m:
        raise ThresholdError(f"--threshold {text!r}: expected {HELP}")
    metric, unit = m["metric"].lower(), (m["unit"] or "").replace("µs", "us")
    metric = {"avg": "mean", "med": "p50", "throughput": "rate", "rps": "rate"}.get(metric, metric)
    unit = _unit(text, metric, unit)
    stage = int(m["stage"]) if m["stage"] else None
    if stage == 0:
        raise ThresholdError(f"--threshold {text!r}: stages count from 1")
    return Threshold(text.strip(), metric, m["op"], float(m["value"]), unit, stage)


def _unit(text: str, metric: str, unit: str) -> str:
    """The unit the threshold is in, checked against its metric."""
    if _percentile(metric) is not None or metric in _LATENCY:
        if unit not in ("", *_US_PER):
            raise ThresholdError(f"--threshold {text!r}: a latency is in ms, us or s")
        return unit or "ms"
    if metric in _COUNTS:
        if unit not in ("", "%") or (metric == "requests" and unit):
            raise ThresholdError(f"--threshold {text!r}: {metric} is a count, or a share in %")
        return unit
    if metric in _RATE:
        if unit not in ("", "/s"):
            raise ThresholdError(f"--threshold {text!r}: the rate is in answers per second")
        return "/s"
    raise ThresholdError(f"--threshold {text!r}: unknown metric {metric!r}; {HELP}")


def _percentile(metric: str) -> float | None:
    if not re.fullmatch(r"p\d+(?:\.\d+)?", metric):
        return None
    value = float(metric[1:])
    return value if 0 < value <= 100 else None


def measure(t: Threshold, f: Figures) -> float:
    """What `t` is judged on, in its unit."""
    if (p := _percentile(t.metric)) is not None:
        return f.latency_us(p) / _US_PER[t.unit]
    if t.metric in _LATENCY:
        return f.latency()[t.metric] / _US_PER[t.unit]
    if t.metric == "rate":
        return f.throughput
    count = {"errors": f.errors, "wrong": f.wrong, "failed": f.errors - f.wrong}.get(
        t.metric, f.requests
    )
    if t.unit == "%":
        return 100.0 * count / f.requests if f.requests else 0.0
    return float(count)


def judge(
    thresholds: Sequence[Threshold], run: Figures, stage: Callable[[int], Figures]
) -> list[dict[str, Any]]:
    """Every threshold judged: expression, scope, metric, op, bound, unit, measured, passed.
    `stage(i)` gives the figures of stage i (from 0). No requests at all fails every one:
    nothing was shown to be fast enough."""
    out = []
    for t in thresholds:
        figures = run if t.stage is None else stage(t.stage - 1)
        value = measure(t, figures)
        passed = bool(figures.requests) and _OPS[t.op](value, t.bound)
        shown = round(value, 3) if math.isfinite(value) else None
        out.append({
            "expression": t.expression, "scope": t.scope, "metric": t.metric, "op": t.op,
            "bound": t.bound, "unit": t.unit, "measured": shown, "passed": passed,
        })  # fmt: skip
    return out


def check_stages(thresholds: Sequence[Threshold], stages: int) -> list[str]:
    """Problems of stage-scoped thresholds against a run of `stages` stages."""
    return [
        f"--threshold {t.expression!r}: there is no stage {t.stage} "
        f"({'no stages given' if not stages else f'{stages} stages'})"
        for t in thresholds
        if t.stage is not None and t.stage > stages
    ]
