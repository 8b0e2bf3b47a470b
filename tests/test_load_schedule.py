"""`txverify load --stage`: durations and stages read, the ramps chained, the send times."""

from __future__ import annotations

from collections import Counter

import pytest

from txverify.cli.load.schedule import (
    CONCURRENCY,
    Schedule,
    ScheduleError,
    Stage,
    parse_duration,
    parse_stage,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90.0), ("90s", 90.0), ("1m30s", 90.0), ("500ms", 0.5), ("1h", 3600.0), ("2.5s", 2.5)],
)
def test_durations_read_as_load_testers_write_them(text: str, seconds: float) -> None:
    assert seconds == parse_duration(text)


@pytest.mark.parametrize("text", ["", "s", "1x", "1m30", "-5s", "5 s s", "1e3"])
def test_a_bad_duration_names_the_form(text: str) -> None:
    with pytest.raises(ScheduleError, match="duration such as 30s"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("30s", "DURATION:TARGET"),
        ("30s:fast", "DURATION:TARGET"),
        ("soon:100", "DURATION:TARGET"),
        ("30s:-1", "at least 0"),
        ("30s:inf", "at least 0"),
    ],
)
def test_a_bad_stage_is_refused_with_its_flag_and_form(text: str, problem: str) -> None:
    with pytest.raises(ScheduleError, match=problem) as caught:
        parse_stage(text)
    assert "--stage" in str(caught.value)


def test_callers_are_whole_numbers() -> None:
    assert Stage(10.0, 8.0) == parse_stage("10s:8", CONCURRENCY)
    with pytest.raises(ScheduleError, match=r"--concurrency-stage.*whole number"):
        parse_stage("10s:2.5", CONCURRENCY)


def test_stages_chain_each_from_where_the_one_before_ended() -> None:
    schedule = Schedule.of([parse_stage("30s:100"), parse_stage("60s:1000"), parse_stage("30s:0")])

    assert [(0.0, 100.0), (100.0, 1000.0), (1000.0, 0.0)] == [
        (s.start, s.target) for s in schedule.stages
    ]
    assert 120.0 == schedule.duration
    assert [(0.0, 30.0), (30.0, 90.0), (90.0, 120.0)] == schedule.bounds()
    assert 50.0 == schedule.target_at(15)
    assert 550.0 == schedule.target_at(60)
    assert 500.0 == schedule.target_at(105)
    assert [0, 1, 2, 2] == [schedule.stage_at(t) for t in (0, 30, 119.9, 500)]


def test_a_zero_second_stage_is_a_step() -> None:
    schedule = Schedule.of([parse_stage("0s:50"), parse_stage("4s:50")])

    assert 50.0 == schedule.target_at(0)
    assert 200 == len(list(schedule.send_times()))


def test_stages_of_no_time_at_all_are_refused() -> None:
    with pytest.raises(ScheduleError, match="no time"):
        Schedule.of([parse_stage("0s:100")])


@pytest.mark.parametrize(
    "stages",
    [
        ["10s:100", "10s:100", "5s:0"],  # ramp up, hold, ramp down
        ["0s:20", "8s:300"],  # a step, then a steep ramp
        ["6s:250", "6s:40"],  # down from a peak
    ],
)
def test_the_sends_per_second_follow_the_schedule_within_a_few_percent(
    stages: list[str],
) -> None:
    schedule = Schedule.of([parse_stage(s) for s in stages])

    times = list(schedule.send_times())
    per_second = Counter(int(t) for t in times)

    assert times == sorted(times)
    assert len(times) == pytest.approx(schedule.count(schedule.duration), abs=1)
    for second in range(int(schedule.duration)):
        asked = schedule.offered(second)
        # One send either side at each second's edges; beyond that, within 3 %.
        assert per_second[second] == pytest.approx(asked, rel=0.03, abs=1.0), second


def test_a_process_gets_its_part_of_every_stage() -> None:
    schedule = Schedule.of([parse_stage("10s:100"), parse_stage("10s:100")])

    half = schedule.scaled(0.5)

    assert len(list(half.send_times())) == pytest.approx(
        len(list(schedule.send_times())) / 2, abs=1
    )
    assert 50.0 == half.target_at(15)
