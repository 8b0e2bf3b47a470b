"""`txverify load --threshold`: each kind read, measured and judged on a run or a stage."""

from __future__ import annotations

import pytest

from txverify.cli.load.results import Figures, new_histogram
from txverify.cli.load.thresholds import (
    ThresholdError,
    check_stages,
    judge,
    measure,
    parse_threshold,
)


def figures(
    latencies_us: list[int], errors: int = 0, wrong: int = 0, elapsed: float = 2.0
) -> Figures:
    histogram = new_histogram()
    for us in latencies_us:
        histogram.record_value(us)
    return Figures(len(latencies_us), errors, wrong, elapsed, histogram)


# 100 answers: 1 ms .. 100 ms, one each; 3 errors of which 1 wrong; over 4 s.
RUN = figures([ms * 1000 for ms in range(1, 101)], errors=3, wrong=1, elapsed=4.0)


@pytest.mark.parametrize(
    ("expression", "measured", "passed"),
    [
        ("p99<50ms", 99.0, False),
        ("p50<=50.1ms", 50.0, True),  # the histogram: 0.1 % resolution
        ("p90 < 0.1s", 0.09, True),
        ("p99.9<101000us", 100_000.0, True),
        ("p75<80ms", 75.0, True),
        ("mean<50ms", 50.5, False),
        ("max<=100.1ms", 100.0, True),
        ("min>=1ms", 1.0, True),
        ("stddev<30ms", 28.9, True),
        ("errors<5%", 3.0, True),
        ("errors<3", 3.0, False),
        ("wrong<1", 1.0, False),
        ("wrong<=1%", 1.0, True),
        ("failed<=2", 2.0, True),
        ("rate>=25", 25.0, True),
        ("throughput>30/s", 25.0, False),
        ("requests>=100", 100.0, True),
    ],
)
def test_each_kind_of_threshold_is_measured_in_its_unit_and_judged(
    expression: str, measured: float, passed: bool
) -> None:
    threshold = parse_threshold(expression)

    (judged,) = judge([threshold], RUN, lambda i: RUN)

    assert measured == pytest.approx(measure(threshold, RUN), rel=0.01)
    assert passed is judged["passed"]
    assert expression == judged["expression"]
    assert "run" == judged["scope"]


def test_a_stage_threshold_is_judged_on_that_stage_alone() -> None:
    slow, fast = figures([90_000] * 10), figures([2_000] * 10)
    stages = [fast, slow]

    judged = judge(
        [parse_threshold("stage1:p99<10ms"), parse_threshold("stage2:p99<10ms")],
        RUN,
        lambda i: stages[i],
    )

    assert [("stage 1", True), ("stage 2", False)] == [(j["scope"], j["passed"]) for j in judged]


def test_a_run_without_requests_fails_every_threshold() -> None:
    (judged,) = judge([parse_threshold("errors<1%")], figures([]), lambda i: figures([]))

    assert judged["passed"] is False


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("p99", "expected"),
        ("p99 = 50ms", "expected"),
        ("latency<5ms", "unknown metric"),
        ("p99<5%", "ms, us or s"),
        ("errors<5ms", "a count, or a share"),
        ("requests<5%", "a count"),
        ("rate<5ms", "per second"),
        ("stage0:p99<5ms", "from 1"),
    ],
)
def test_a_bad_threshold_is_refused_naming_it(expression: str, problem: str) -> None:
    with pytest.raises(ThresholdError, match=problem) as caught:
        parse_threshold(expression)
    assert expression in str(caught.value)


def test_a_threshold_for_a_stage_that_is_not_there_is_a_problem() -> None:
    thresholds = [parse_threshold("stage3:p99<5ms"), parse_threshold("p99<5ms")]

    assert ["there is no stage 3 (2 stages)"] == [
        p.split(": ", 1)[1] for p in check_stages(thresholds, 2)
    ]
    assert "no stages given" in check_stages(thresholds, 0)[0]
