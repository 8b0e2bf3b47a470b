"""Rate limits hold to one documented range wherever they come from, so no wait overflows.

Members (MemberRegistry, the TOML file) and the hub's own --rate-limit alike:
a rate of 0.001-1,000,000 requests per second, a burst of 1-1,000,000 (a member's
0 means the hub's default). A limit of 1e-300/s made the wait 1e300 s, which no
RetryInfo can hold: Verify answered UNKNOWN. Checked here on the local buckets and
on the shared ones in Redis, at the very ends of the range.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from txverify.errors import Reason, ServiceError, details_from_metadata
from txverify.hub.admission import member_rate_limit
from txverify.hub.registry import Member
from txverify.hub.resilience.ratelimit import MAX_BURST, MAX_RATE, MIN_RATE, RateLimit, TokenBucket
from txverify.hub.resilience.ratelimit_redis import SharedRateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("rate", "burst", "message"),
    [
        (1e-300, 1, "rate must be 0.001-1,000,000 requests per second, got 1e-300"),
        (0.000999, 1, "rate must be 0.001-1,000,000"),
        (1_000_000.001, 1, "rate must be 0.001-1,000,000"),
        (float("nan"), 1, "rate must be 0.001-1,000,000 requests per second, got nan"),
        (float("inf"), 1, "got inf"),
        (0.0, 1, "got 0.0"),
        (1.0, 0, "burst must be a whole number 1-1,000,000, got 0"),
        (1.0, 1_000_001, "burst must be a whole number 1-1,000,000"),
        (1.0, 2.5, "burst must be a whole number 1-1,000,000, got 2.5"),
        (1.0, True, "burst must be a whole number"),
    ],
)
def test_a_rate_limit_out_of_range_is_refused_saying_the_range(
    rate: float, burst: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message.replace(".", r"\.").replace("+", r"\+")):
        RateLimit(rate=rate, burst=burst)


def test_the_range_is_the_documented_one() -> None:
    assert (0.001, 1_000_000.0, 1_000_000) == (MIN_RATE, MAX_RATE, MAX_BURST)


@pytest.mark.parametrize(
    ("rate", "burst", "wait"), [(MIN_RATE, 1, 1000.0), (MAX_RATE, 1, 1e-6), (1.0, MAX_BURST, 1.0)]
)
def test_an_empty_bucket_at_either_end_of_the_range_says_a_wait_retry_info_holds(
    rate: float, burst: int, wait: float
) -> None:
    clock = Clock()
    bucket = TokenBucket(RateLimit(rate=rate, burst=burst), clock=clock)
    for _ in range(burst):
        assert 0.0 == bucket.try_take()

    waited = bucket.try_take()
    error = ServiceError(Reason.RATE_LIMITED, "over", retry_after=waited)
    told = details_from_metadata(error.status_code, "", error.trailing_metadata()).retry_after

    assert wait == pytest.approx(waited)
    assert told == pytest.approx(waited, abs=1e-9)


@pytest.mark.parametrize("rate", [0.0, MIN_RATE, 1.0, MAX_RATE])
@pytest.mark.parametrize("burst", [0, 1, MAX_BURST])
def test_every_member_limit_in_range_makes_a_bucket(rate: float, burst: int) -> None:
    limit = member_rate_limit(Member("014", rate_limit_rps=rate, rate_limit_burst=burst))

    assert (limit is None) == (rate == 0)
    if limit is not None:
        TokenBucket(limit).try_take()


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


async def test_the_shared_bucket_in_redis_holds_the_slowest_deepest_limit(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    """The GCRA script's numbers are largest at MIN_RATE and MAX_BURST: an interval of
    1e9 µs, a tolerance of ~1e15 µs and a key kept ~1e12 ms. A bucket about to run
    out (its arrival time set to the edge) still goes through Redis, and the wait it
    then says is one interval, 1,000 s, as RetryInfo carries it."""
    prefix = f"test:{uuid.uuid4().hex}:"
    limiter = SharedRateLimiter(redis_url, RateLimit(rate=MIN_RATE, burst=MAX_BURST), prefix=prefix)
    try:
        seconds, micros = await redis_client.time()
        interval = 1e6 / MIN_RATE
        edge = (seconds * 1_000_000 + micros) + (MAX_BURST - 1) * interval
        await redis_client.set(prefix + "002", f"{edge:.0f}")

        first = await limiter.take("002")
        second = await limiter.take("002")
        ttl_ms = await redis_client.pttl(prefix + "002")
    finally:
        await limiter.close()

    assert (0.0, 0) == (first, limiter.fallbacks)
    assert 999 < second <= 1000
    assert MAX_BURST / MIN_RATE * 1000 * 0.99 < ttl_ms


async def test_the_shared_bucket_in_redis_holds_the_fastest_limit(redis_url: str) -> None:
    prefix = f"test:{uuid.uuid4().hex}:"
    limiter = SharedRateLimiter(redis_url, RateLimit(rate=MAX_RATE, burst=1), prefix=prefix)
    try:
        waits = [await limiter.take("002") for _ in range(50)]
    finally:
        await limiter.close()

    assert 0 == limiter.fallbacks
    assert all(0 <= w <= 1e-6 for w in waits)
