"""A not-found answer costs a member more of its rate limit than a found one (M15 item 3).

Guessing transRefs is the attack on a slip API: with `not_found_cost` 10 and a
burst of 20, two SLIP_NOT_FOUND answers spend the burst, while 20 found slips
pass; the same through the rate limits shared in Redis. The metrics count
not-found answers per requester member, so an operator sees who is probing.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
import redis

from conftest import member_channel
from txverify.errors import ErrorDetails, details_of
from txverify.hub.app import RunningHub
from txverify.hub.resilience.ratelimit import RateLimit, RateLimiter, TokenBucket
from txverify.hub.resilience.ratelimit_redis import SharedRateLimiter
from txverify.hub.settings import HubSettings
from txverify.simulators.bank import SlipVisibility
from txverify.simulators.server import RunningSimulator
from txverify.v1 import common_pb2, verification_pb2, verification_pb2_grpc

HubFactory = Callable[..., Awaitable[RunningHub]]
# 0.01/s: a token comes back every 100 s, so nothing refills during a test.
LIMIT = RateLimit(rate=0.01, burst=20)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def found_slips(sim: RunningSimulator, count: int) -> list[common_pb2.SlipRef]:
    """`count` slips the simulated issuers find (visible now), across the banks."""
    refs = [
        common_pb2.SlipRef(sending_bank=code, trans_ref=slip.transaction.trans_ref)
        for code, node in sim.nodes.items()
        for slip in node.bank.list_slips(1000, None)
        if node.bank.visibility(slip.transaction) is SlipVisibility.VISIBLE
    ]
    assert len(refs) >= count, "the simulator seeded too few visible slips"
    return refs[:count]


def made_up(n: int) -> common_pb2.SlipRef:
    """A transRef nobody issued, at a real issuer: what a prober sends."""
    return common_pb2.SlipRef(sending_bank="014", trans_ref=f"20260101014PROBE{n:08d}")


async def outcome(port: int, ref: common_pb2.SlipRef, member: str = "002") -> str:
    """The outcome: "OK" or the failure's reason."""
    async with member_channel(port, member) as channel:
        stub: Any = verification_pb2_grpc.VerificationServiceStub(channel)
        try:
            await stub.Verify(verification_pb2.VerifyRequest(slip_ref=ref), timeout=5)
        except grpc.aio.AioRpcError as error:
            return details_of(error).reason
    return "OK"


async def failure(port: int, ref: common_pb2.SlipRef) -> ErrorDetails:
    async with member_channel(port) as channel:
        stub: Any = verification_pb2_grpc.VerificationServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Verify(verification_pb2.VerifyRequest(slip_ref=ref), timeout=5)
    return details_of(caught.value)


# --- the buckets ------------------------------------------------------------------------


def test_a_charge_may_put_a_bucket_into_debt_down_to_minus_its_burst() -> None:
    clock = Clock()
    bucket = TokenBucket(RateLimit(rate=1, burst=5), clock=clock)

    bucket.charge(3)
    after_one = bucket.tokens()
    bucket.charge(100)

    assert (2.0, -5.0) == (after_one, bucket.tokens())
    assert 6.0 == pytest.approx(bucket.try_take())  # 1 - (-5) tokens at 1/s


def test_a_bucket_in_debt_refills_before_it_lets_a_call_go() -> None:
    clock = Clock()
    limiter = RateLimiter(RateLimit(rate=2, burst=2), clock=clock)
    limiter.try_take("002")
    limiter.charge_now("002", 3)  # 1 - 3 = -2 tokens

    refused = limiter.try_take("002")
    clock.now += 1.5  # +3 tokens: 1
    allowed = limiter.try_take("002")

    assert 1.5 == pytest.approx(refused)
    assert 0.0 == allowed


def test_unlimited_members_are_never_charged() -> None:
    limiter = RateLimiter(None)

    limiter.charge_now("002", 1000)

    assert (0.0, 0) == (limiter.try_take("002"), len(limiter))


def test_the_cost_is_a_whole_number_of_calls_1_to_1000() -> None:
    for bad in (0, 1001, 2.5, True):
        with pytest.raises(ValueError, match="not-found cost must be a whole number 1-1000"):
            HubSettings(not_found_cost=bad)  # type: ignore[arg-type]


# --- the hub ----------------------------------------------------------------------------


async def test_two_not_founds_spend_a_burst_of_20_at_cost_10(hub_factory: HubFactory) -> None:
    hub = await hub_factory(rate_limit=LIMIT, not_found_cost=10)

    probes = [await outcome(hub.port, made_up(n)) for n in range(2)]
    refused = await failure(hub.port, made_up(2))

    assert ["SLIP_NOT_FOUND"] * 2 == probes
    assert ("RATE_LIMITED", True) == (refused.reason, (refused.retry_after or 0) > 1)


async def test_twenty_found_slips_pass_a_burst_of_20_at_cost_10(
    hub_factory: HubFactory, simulator: RunningSimulator
) -> None:
    hub = await hub_factory(rate_limit=LIMIT, not_found_cost=10)
    slips = found_slips(simulator, 20)

    outcomes = [await outcome(hub.port, ref) for ref in slips]
    then = await outcome(hub.port, slips[0])

    assert ["OK"] * 20 == outcomes
    assert "RATE_LIMITED" == then  # the 21st call: the burst held 20, no more


async def test_cost_1_makes_a_not_found_cost_what_a_found_slip_does(
    hub_factory: HubFactory,
) -> None:
    hub = await hub_factory(rate_limit=LIMIT, not_found_cost=1)

    outcomes = [await outcome(hub.port, made_up(n)) for n in range(21)]

    assert ["SLIP_NOT_FOUND"] * 20 + ["RATE_LIMITED"] == outcomes


@pytest.mark.parametrize("reason", ["ISSUER_NOT_FOUND", "INVALID_REQUEST"])
async def test_only_slip_not_found_is_charged_extra(hub_factory: HubFactory, reason: str) -> None:
    hub = await hub_factory(rate_limit=LIMIT, not_found_cost=10)
    bad = (
        common_pb2.SlipRef(sending_bank="099", trans_ref="20260101099ABCDEFGH")
        if reason == "ISSUER_NOT_FOUND"
        else common_pb2.SlipRef(sending_bank="014", trans_ref="not a ref!")
    )

    outcomes = [await outcome(hub.port, bad) for _ in range(3)]

    assert [reason] * 3 == outcomes


async def test_a_probing_member_does_not_spend_another_members_limit(
    hub_factory: HubFactory, simulator: RunningSimulator
) -> None:
    hub = await hub_factory(rate_limit=LIMIT, not_found_cost=10)
    for n in range(2):
        await outcome(hub.port, made_up(n), member="002")

    other = await outcome(hub.port, found_slips(simulator, 1)[0], member="014")

    assert "OK" == other


async def test_metrics_count_not_founds_per_requester_member(
    hub_factory: HubFactory, simulator: RunningSimulator
) -> None:
    hub = await hub_factory()
    for n in range(3):
        await outcome(hub.port, made_up(n), member="002")
    await outcome(hub.port, found_slips(simulator, 1)[0], member="002")
    await outcome(hub.port, found_slips(simulator, 1)[0], member="014")

    families = {f.name: f for f in hub.metrics.registry.collect()}
    calls = {s.labels["member"]: s.value for s in families["txverify_member_verify"].samples}
    missed = {s.labels["member"]: s.value for s in families["txverify_member_not_found"].samples}

    assert ({"002": 4, "014": 1}, {"002": 3, "014": 0}) == (calls, missed)


# --- the same in Redis ------------------------------------------------------------------


@pytest.fixture
def redis_prefix(redis_url: str) -> Any:
    prefix = f"test:{uuid.uuid4().hex}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)
    finally:
        client.close()


async def test_a_shared_bucket_is_charged_into_debt_in_redis(
    redis_url: str, redis_prefix: str
) -> None:
    a = SharedRateLimiter(redis_url, RateLimit(rate=0.01, burst=5), prefix=redis_prefix)
    b = SharedRateLimiter(redis_url, RateLimit(rate=0.01, burst=5), prefix=redis_prefix)
    try:
        await a.take("002")
        await a.charge("002", 3)  # 5 - 1 - 3 = 1 token
        seen = await b.tokens("002")
        allowed = await b.take("002")
        await b.charge("002", 100)  # floor: -5
        floor = await a.tokens("002")
        refused = await a.take("002")
    finally:
        await a.close()
        await b.close()

    assert 1.0 == pytest.approx(seen, abs=0.01)
    assert 0.0 == allowed
    assert -5.0 == pytest.approx(floor, abs=0.01)
    assert 600.0 == pytest.approx(refused, rel=0.01)  # 6 tokens at 0.01/s
    assert 0 == a.fallbacks + b.fallbacks


async def test_two_not_founds_spend_the_shared_burst_too(
    hub_factory: HubFactory, redis_url: str, simulator: RunningSimulator
) -> None:
    hub = await hub_factory(rate_limit=LIMIT, not_found_cost=10, rate_limit_store=redis_url)
    assert isinstance(hub.limiter, SharedRateLimiter)
    hub.limiter.prefix = f"test:{uuid.uuid4().hex}:"  # a bucket of this test's own

    probes = [await outcome(hub.port, made_up(n)) for n in range(2)]
    refused = await outcome(hub.port, found_slips(simulator, 1)[0])

    assert ["SLIP_NOT_FOUND", "SLIP_NOT_FOUND", "RATE_LIMITED"] == [*probes, refused]
    assert 0 == hub.limiter.fallbacks
