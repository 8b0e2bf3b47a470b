"""Circuit breaker, bulkhead and rate limits, on a fake clock so no test sleeps."""

from __future__ import annotations

import grpc
import pytest

from txverify.hub.forwarding import issuer_error
from txverify.hub.registry import Member
from txverify.hub.resilience.breaker import BreakerSettings, CircuitBreaker, CircuitState
from txverify.hub.resilience.bulkhead import Bulkhead
from txverify.hub.resilience.ratelimit import RateLimit, RateLimiter, TokenBucket


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, start: float = 1_000.0) -> None:
        # Not 0: code must not assume the clock starts at zero.
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


Change = tuple[str, CircuitState, CircuitState]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def changes() -> list[Change]:
    return []


@pytest.fixture
def breaker(clock: FakeClock, changes: list[Change]) -> CircuitBreaker:
    def record(name: str, old: CircuitState, new: CircuitState) -> None:
        changes.append((name, old, new))

    # failing_seconds=0: the count alone; the span has tests of its own below.
    settings = BreakerSettings(failure_threshold=3, cooldown=5.0, failing_seconds=0.0)
    return CircuitBreaker("014", settings, clock=clock, on_change=record)


def fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        breaker.record_failure()


def open_then_cool(breaker: CircuitBreaker, clock: FakeClock) -> None:
    fail(breaker, 3)
    clock.advance(5.0)


# Circuit breaker


def test_breaker_stays_closed_below_the_threshold(breaker: CircuitBreaker) -> None:
    fail(breaker, 2)

    assert CircuitState.CLOSED == breaker.state
    assert True is breaker.allow()


def test_breaker_success_resets_the_consecutive_failure_count(breaker: CircuitBreaker) -> None:
    fail(breaker, 2)
    breaker.record_success()
    fail(breaker, 2)

    assert CircuitState.CLOSED == breaker.state


def test_breaker_opens_at_the_threshold_and_reports_it(
    breaker: CircuitBreaker, changes: list[Change]
) -> None:
    fail(breaker, 3)

    assert CircuitState.OPEN == breaker.state
    assert [("014", CircuitState.CLOSED, CircuitState.OPEN)] == changes


def test_breaker_refuses_calls_while_open(breaker: CircuitBreaker, clock: FakeClock) -> None:
    fail(breaker, 3)
    clock.advance(4.9)

    assert False is breaker.allow()


def test_breaker_retry_after_counts_down_while_open(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    fail(breaker, 3)
    clock.advance(2.0)

    assert 3.0 == pytest.approx(breaker.retry_after)


def test_breaker_retry_after_is_zero_when_closed(breaker: CircuitBreaker) -> None:
    assert 0.0 == breaker.retry_after


def test_breaker_turns_half_open_after_the_cooldown_and_reports_it(
    breaker: CircuitBreaker, clock: FakeClock, changes: list[Change]
) -> None:
    open_then_cool(breaker, clock)

    assert CircuitState.HALF_OPEN == breaker.state
    assert ("014", CircuitState.OPEN, CircuitState.HALF_OPEN) == changes[-1]


def test_breaker_lets_exactly_one_probe_through_after_the_cooldown(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    open_then_cool(breaker, clock)

    assert [True, False, False] == [breaker.allow(), breaker.allow(), breaker.allow()]


def test_breaker_closes_when_the_probe_succeeds(
    breaker: CircuitBreaker, clock: FakeClock, changes: list[Change]
) -> None:
    open_then_cool(breaker, clock)
    breaker.allow()

    breaker.record_success()

    assert CircuitState.CLOSED == breaker.state
    assert ("014", CircuitState.HALF_OPEN, CircuitState.CLOSED) == changes[-1]


def test_breaker_after_closing_needs_the_full_threshold_to_open_again(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    open_then_cool(breaker, clock)
    breaker.allow()
    breaker.record_success()

    fail(breaker, 2)

    assert CircuitState.CLOSED == breaker.state


def test_breaker_reopens_for_a_new_cooldown_when_the_probe_fails(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    open_then_cool(breaker, clock)
    breaker.allow()

    breaker.record_failure()

    assert (CircuitState.OPEN, 5.0) == (breaker.state, breaker.retry_after)


def test_breaker_record_ignored_frees_the_probe_slot(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    open_then_cool(breaker, clock)
    breaker.allow()

    breaker.record_ignored()

    assert (CircuitState.HALF_OPEN, True) == (breaker.state, breaker.allow())


def test_breaker_record_ignored_does_not_reset_the_failure_count(
    breaker: CircuitBreaker,
) -> None:
    fail(breaker, 2)
    breaker.record_ignored()
    fail(breaker, 1)

    assert CircuitState.OPEN == breaker.state


def test_breaker_a_late_failure_while_open_leaves_the_cooldown_alone(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    fail(breaker, 3)
    clock.advance(2.0)

    breaker.record_failure()

    assert CircuitState.OPEN == breaker.state
    assert 3.0 == pytest.approx(breaker.retry_after)


def test_breaker_a_late_success_while_open_lets_one_probe_through_now(
    breaker: CircuitBreaker, clock: FakeClock, changes: list[Change]
) -> None:
    # A call let through before the circuit opened was answered: the issuer is
    # answering now (a flapping one came back), so the cooldown need not run out.
    fail(breaker, 3)
    clock.advance(2.0)

    breaker.record_success()

    assert CircuitState.HALF_OPEN == breaker.state
    assert [True, False] == [breaker.allow(), breaker.allow()]
    assert ("014", CircuitState.OPEN, CircuitState.HALF_OPEN) == changes[-1]


def _spanning(clock: FakeClock) -> CircuitBreaker:
    return CircuitBreaker("014", BreakerSettings(3, 5.0, failing_seconds=1.0), clock=clock)


def test_breaker_failures_in_a_row_open_only_once_they_span_failing_seconds(
    clock: FakeClock,
) -> None:
    breaker = _spanning(clock)
    for _ in range(10):  # ten in 0.9 s: the count is reached, the span is not
        breaker.record_failure()
        clock.advance(0.1)
    before = breaker.state

    breaker.record_failure()  # the first was 1.0 s ago

    assert (CircuitState.CLOSED, CircuitState.OPEN) == (before, breaker.state)


def test_breaker_failures_spanning_failing_seconds_still_need_the_count(
    clock: FakeClock,
) -> None:
    breaker = _spanning(clock)
    breaker.record_failure()
    clock.advance(5.0)
    breaker.record_failure()
    before = breaker.state

    breaker.record_failure()

    assert (CircuitState.CLOSED, CircuitState.OPEN) == (before, breaker.state)


def test_breaker_a_success_starts_the_span_again(clock: FakeClock) -> None:
    breaker = _spanning(clock)
    fail(breaker, 3)
    clock.advance(0.9)
    breaker.record_success()
    fail(breaker, 2)
    clock.advance(0.9)
    breaker.record_failure()  # three in a row, but they span 0.9 s

    assert CircuitState.CLOSED == breaker.state


def test_breaker_reports_nothing_when_the_state_does_not_change(
    breaker: CircuitBreaker, changes: list[Change]
) -> None:
    fail(breaker, 2)
    breaker.record_success()

    assert [] == changes


def test_breaker_probe_now_ends_the_cooldown_and_lets_one_probe_through(
    breaker: CircuitBreaker, clock: FakeClock, changes: list[Change]
) -> None:
    fail(breaker, 3)
    clock.advance(1.0)

    breaker.probe_now()

    assert ("014", CircuitState.OPEN, CircuitState.HALF_OPEN) == changes[-1]
    assert [True, False] == [breaker.allow(), breaker.allow()]


def test_breaker_probe_now_while_half_open_frees_the_probe_slot_for_a_new_probe(
    breaker: CircuitBreaker, clock: FakeClock, changes: list[Change]
) -> None:
    open_then_cool(breaker, clock)
    breaker.allow()
    reported = len(changes)

    breaker.probe_now()

    assert (CircuitState.HALF_OPEN, True, False) == (
        breaker.state,
        breaker.allow(),
        breaker.allow(),
    )
    assert reported == len(changes)


def test_breaker_probe_now_leaves_a_closed_circuit_alone(
    breaker: CircuitBreaker, changes: list[Change]
) -> None:
    fail(breaker, 2)

    breaker.probe_now()
    fail(breaker, 1)

    assert CircuitState.OPEN == breaker.state  # the failure count was kept
    assert [("014", CircuitState.CLOSED, CircuitState.OPEN)] == changes


def test_breaker_early_probe_that_fails_reopens_for_a_full_cooldown(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    fail(breaker, 3)
    clock.advance(1.0)
    breaker.probe_now()
    breaker.allow()

    breaker.record_failure()

    assert (CircuitState.OPEN, 5.0, False) == (
        breaker.state,
        breaker.retry_after,
        breaker.allow(),
    )


def test_breaker_early_probe_that_succeeds_closes_the_circuit(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    fail(breaker, 3)
    breaker.probe_now()
    breaker.allow()

    breaker.record_success()

    assert (CircuitState.CLOSED, 0.0) == (breaker.state, breaker.retry_after)


@pytest.mark.parametrize(
    ("failure_threshold", "cooldown", "failing_seconds", "message"),
    [
        (0, 5.0, 1.0, "failure_threshold"),
        (1, 0.0, 1.0, "cooldown"),
        (1, -1.0, 1.0, "cooldown"),
        (1, float("nan"), 1.0, "cooldown"),
        (1, float("inf"), 1.0, "cooldown"),
        (1, 5.0, -0.1, "failing_seconds"),
        (1, 5.0, float("nan"), "failing_seconds"),
        (1, 5.0, float("inf"), "failing_seconds"),
    ],
)
def test_breaker_settings_refuse_values_that_make_no_sense(
    failure_threshold: int, cooldown: float, failing_seconds: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        BreakerSettings(failure_threshold, cooldown, failing_seconds)


# Bulkhead


def test_bulkhead_admits_up_to_its_limit_then_refuses() -> None:
    bulkhead = Bulkhead("014", 2)

    assert [True, True, False] == [bulkhead.try_acquire() for _ in range(3)]
    assert 2 == bulkhead.in_flight


def test_bulkhead_release_frees_one_slot() -> None:
    bulkhead = Bulkhead("014", 2)
    bulkhead.try_acquire()
    bulkhead.try_acquire()

    bulkhead.release()

    assert (1, True, False) == (
        bulkhead.in_flight,
        bulkhead.try_acquire(),
        bulkhead.try_acquire(),
    )


def test_bulkhead_release_without_acquire_raises_and_stays_at_zero() -> None:
    bulkhead = Bulkhead("014", 1)

    with pytest.raises(RuntimeError, match="release without acquire"):
        bulkhead.release()
    assert 0 == bulkhead.in_flight


def test_bulkhead_slot_releases_when_the_block_ends() -> None:
    bulkhead = Bulkhead("014", 1)

    with bulkhead.slot() as ok:
        assert (True, 1) == (ok, bulkhead.in_flight)
    assert 0 == bulkhead.in_flight


def test_bulkhead_slot_releases_when_the_block_raises() -> None:
    bulkhead = Bulkhead("014", 1)

    with pytest.raises(LookupError), bulkhead.slot():
        raise LookupError

    assert 0 == bulkhead.in_flight


def test_bulkhead_refused_slot_yields_false_and_releases_nothing() -> None:
    bulkhead = Bulkhead("014", 1)
    bulkhead.try_acquire()

    with bulkhead.slot() as ok:
        assert False is ok
    assert 1 == bulkhead.in_flight


def test_bulkhead_refuses_a_limit_below_one() -> None:
    with pytest.raises(ValueError, match="limit must be >= 1"):
        Bulkhead("014", 0)


# Token bucket


def take(taker: TokenBucket, times: int) -> list[float]:
    return [taker.try_take() for _ in range(times)]


def test_token_bucket_gives_its_burst_at_once(clock: FakeClock) -> None:
    bucket = TokenBucket(RateLimit(rate=2.0, burst=3), clock=clock)

    assert [0.0, 0.0, 0.0] == take(bucket, 3)


def test_token_bucket_when_empty_says_to_wait_one_over_rate(clock: FakeClock) -> None:
    bucket = TokenBucket(RateLimit(rate=4.0, burst=1), clock=clock)
    bucket.try_take()

    assert 0.25 == pytest.approx(bucket.try_take())


def test_token_bucket_refills_over_time(clock: FakeClock) -> None:
    bucket = TokenBucket(RateLimit(rate=3.0, burst=1), clock=clock)
    bucket.try_take()

    clock.advance(bucket.try_take())

    assert 0.0 == bucket.try_take()


def test_token_bucket_partial_refill_shortens_the_wait(clock: FakeClock) -> None:
    bucket = TokenBucket(RateLimit(rate=1.0, burst=1), clock=clock)
    bucket.try_take()

    clock.advance(0.75)

    assert 0.25 == pytest.approx(bucket.try_take())


def test_token_bucket_never_holds_more_than_its_burst(clock: FakeClock) -> None:
    bucket = TokenBucket(RateLimit(rate=10.0, burst=2), clock=clock)

    clock.advance(3_600.0)

    assert [0.0, 0.0] == take(bucket, 2)
    assert 0.1 == pytest.approx(bucket.try_take())


@pytest.mark.parametrize(
    ("rate", "burst", "message"),
    [
        (0.0, 1, "rate"),
        (-1.0, 1, "rate"),
        (float("nan"), 1, "rate"),
        (float("inf"), 1, "rate"),
        (1.0, 0, "burst"),
    ],
)
def test_rate_limit_refuses_values_that_make_no_sense(
    rate: float, burst: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        RateLimit(rate=rate, burst=burst)


# Rate limiter


def test_rate_limiter_without_a_default_is_unlimited(clock: FakeClock) -> None:
    limiter = RateLimiter(None, clock=clock)

    assert [0.0] * 1_000 == [limiter.try_take("002") for _ in range(1_000)]
    assert 0 == len(limiter)


def test_rate_limiter_keeps_each_key_apart(clock: FakeClock) -> None:
    limiter = RateLimiter(RateLimit(rate=1.0, burst=1), clock=clock)
    limiter.try_take("002")

    assert (0.0, 1.0) == (limiter.try_take("014"), limiter.try_take("002"))


def test_rate_limiter_override_replaces_the_default_for_that_key(clock: FakeClock) -> None:
    limiter = RateLimiter(RateLimit(rate=1.0, burst=1), clock=clock)

    limiter.set_limit("002", RateLimit(rate=1.0, burst=3))

    assert [0.0, 0.0, 0.0] == [limiter.try_take("002") for _ in range(3)]
    assert 1.0 == limiter.try_take("002")


def test_rate_limiter_override_limits_a_key_when_the_default_is_unlimited(
    clock: FakeClock,
) -> None:
    limiter = RateLimiter(None, clock=clock)

    limiter.set_limit("002", RateLimit(rate=2.0, burst=1))

    assert (0.0, 0.5, 0.0) == (
        limiter.try_take("002"),
        limiter.try_take("002"),
        limiter.try_take("014"),
    )


def test_rate_limiter_set_limit_none_goes_back_to_the_default(clock: FakeClock) -> None:
    default = RateLimit(rate=1.0, burst=1)
    limiter = RateLimiter(default, clock=clock)
    limiter.set_limit("002", RateLimit(rate=5.0, burst=10))

    limiter.set_limit("002", None)

    assert default == limiter.limit_for("002")
    assert (0.0, 1.0) == (limiter.try_take("002"), limiter.try_take("002"))


def test_rate_limiter_going_back_to_an_unlimited_default_drops_the_bucket(
    clock: FakeClock,
) -> None:
    limiter = RateLimiter(None, clock=clock)
    limiter.set_limit("002", RateLimit(rate=1.0, burst=1))
    limiter.try_take("002")

    limiter.set_limit("002", None)

    assert (0, 0.0) == (len(limiter), limiter.try_take("002"))


def test_rate_limiter_lowering_a_limit_caps_the_saved_tokens(clock: FakeClock) -> None:
    limiter = RateLimiter(RateLimit(rate=1.0, burst=10), clock=clock)
    limiter.try_take("002")  # 9 tokens left

    limiter.set_limit("002", RateLimit(rate=1.0, burst=2))

    assert [0.0, 0.0] == [limiter.try_take("002") for _ in range(2)]
    assert 1.0 == limiter.try_take("002")


def test_rate_limiter_raising_a_limit_does_not_hand_out_a_new_burst(clock: FakeClock) -> None:
    limiter = RateLimiter(RateLimit(rate=1.0, burst=1), clock=clock)
    limiter.try_take("002")

    limiter.set_limit("002", RateLimit(rate=2.0, burst=10))

    assert 0.5 == limiter.try_take("002")


def test_rate_limiter_forgets_buckets_that_are_full_and_idle(clock: FakeClock) -> None:
    limiter = RateLimiter(RateLimit(rate=1.0, burst=2), clock=clock, sweep_every=60.0)
    for key in ("002", "004", "006"):
        limiter.try_take(key)

    clock.advance(60.0)
    limiter.try_take("014")

    assert 1 == len(limiter)


def test_rate_limiter_keeps_buckets_that_are_still_refilling(clock: FakeClock) -> None:
    limiter = RateLimiter(RateLimit(rate=0.01, burst=1), clock=clock, sweep_every=60.0)
    limiter.try_take("002")

    clock.advance(60.0)
    limiter.try_take("014")

    assert 2 == len(limiter)
    assert 40.0 == pytest.approx(limiter.try_take("002"))


def test_rate_limiter_forgotten_bucket_behaves_like_a_full_one(clock: FakeClock) -> None:
    limiter = RateLimiter(RateLimit(rate=1.0, burst=2), clock=clock, sweep_every=60.0)
    limiter.try_take("002")
    clock.advance(60.0)
    limiter.try_take("014")  # sweeps "002"

    assert [0.0, 0.0, 1.0] == [limiter.try_take("002") for _ in range(3)]


def test_rate_limiter_refuses_a_sweep_period_that_makes_no_sense(clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="sweep_every"):
        RateLimiter(None, clock=clock, sweep_every=0.0)


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (grpc.StatusCode.UNAVAILABLE, "ISSUER_UNAVAILABLE"),
        (grpc.StatusCode.CANCELLED, "ISSUER_UNAVAILABLE"),  # the issuer's server stopping
        (grpc.StatusCode.DEADLINE_EXCEEDED, "ISSUER_TIMEOUT"),
        (grpc.StatusCode.INTERNAL, "ISSUER_ERROR"),
    ],
)
def test_an_issuers_failure_maps_to_what_the_requester_is_told(
    code: grpc.StatusCode, reason: str
) -> None:
    error = grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), "")

    mapped = issuer_error(Member("014", issuer_endpoint="127.0.0.1:1"), error)

    assert reason == mapped.reason.value
