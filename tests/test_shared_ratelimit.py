"""Rate limits shared by hub replicas through Redis (resilience.ratelimit_redis), on a real Redis.

Two limiters (or two hub processes) on one Redis share one bucket per member;
without Redis they fall back to their own buckets; members without a limit
never touch Redis.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import redis

from conftest import member_channel, members_file, start_hub_process
from txverify.errors import details_of
from txverify.hub.resilience.ratelimit import RateLimit
from txverify.hub.resilience.ratelimit_redis import SharedRateLimiter
from txverify.simulators.bank import SlipVisibility
from txverify.simulators.server import RunningSimulator
from txverify.v1 import verification_pb2, verification_pb2_grpc

# slow: real processes or long runs; `make test-fast` leaves it out (`make test` runs it).
pytestmark = pytest.mark.slow

DEAD_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1


@pytest.fixture
async def pair(redis_url: str) -> AsyncIterator[tuple[SharedRateLimiter, SharedRateLimiter]]:
    """Two limiters, as in two replicas, on one Redis, with a key prefix of their own."""
    prefix = f"test:{uuid.uuid4().hex}:"
    limit = RateLimit(rate=20, burst=5)
    a = SharedRateLimiter(redis_url, limit, prefix=prefix)
    b = SharedRateLimiter(redis_url, limit, prefix=prefix)
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def test_two_replicas_share_one_burst(pair: tuple[SharedRateLimiter, ...]) -> None:
    a, b = pair

    waits = [await (a if i % 2 else b).take("002") for i in range(12)]

    assert [0.0] * 5 == waits[:5]
    assert all(w > 0 for w in waits[5:])
    assert 0 == a.fallbacks + b.fallbacks


async def test_the_wait_is_about_one_interval_and_then_a_call_goes(
    pair: tuple[SharedRateLimiter, ...],
) -> None:
    a, b = pair
    for _ in range(5):
        await a.take("014")

    wait = await b.take("014")
    await asyncio.sleep(wait + 0.005)
    after = await b.take("014")

    assert 0.0 < wait <= 1 / 20
    assert 0.0 == after


async def test_members_are_limited_apart(pair: tuple[SharedRateLimiter, ...]) -> None:
    a, _ = pair
    for _ in range(5):
        await a.take("002")

    assert 0.0 == await a.take("014")


async def test_a_member_without_a_limit_never_asks_redis() -> None:
    limiter = SharedRateLimiter(DEAD_REDIS, None)
    try:
        waits = [await limiter.take("002") for _ in range(50)]
    finally:
        await limiter.close()

    assert [0.0] * 50 == waits
    assert 0 == limiter.fallbacks


async def test_without_redis_each_process_limits_on_its_own(
    caplog: pytest.LogCaptureFixture,
) -> None:
    limiter = SharedRateLimiter(DEAD_REDIS, RateLimit(rate=1, burst=3))
    try:
        waits = [await limiter.take("002") for _ in range(5)]
    finally:
        await limiter.close()

    assert [0.0, 0.0, 0.0] == waits[:3]
    assert all(w > 0 for w in waits[3:])
    assert 5 == limiter.fallbacks
    assert "per-process buckets" in caplog.text


# --- two hub processes ---------------------------------------------------------------------


async def _start_hub(members: Path, *args: str) -> tuple[asyncio.subprocess.Process, int]:
    return await start_hub_process(
        members, "--rate-limit-rps", "2", "--rate-limit-burst", "10", "--drain-delay", "0", *args
    )


async def _oks_through_two_hubs(sim: RunningSimulator, tmp_path: Path, *args: str) -> int:
    """30 verifications by member 002, alternating between two hubs: how many answered OK."""
    members = members_file(sim, tmp_path)
    bank = sim.nodes["014"].bank
    qr = next(
        s.qr_text
        for s in bank.list_slips(40, None)
        if bank.visibility(s.transaction) is SlipVisibility.VISIBLE
    )
    hubs = list(await asyncio.gather(_start_hub(members, *args), _start_hub(members, *args)))
    outcomes: list[str] = []
    try:
        channels = [member_channel(port) for _, port in hubs]
        stubs = [verification_pb2_grpc.VerificationServiceStub(c) for c in channels]
        for i in range(30):
            try:
                await stubs[i % 2].Verify(verification_pb2.VerifyRequest(qr_text=qr), timeout=5)
                outcomes.append("OK")
            except grpc.aio.AioRpcError as error:
                outcomes.append(details_of(error).reason)
        for channel in channels:
            await channel.close()
    finally:
        for proc, _ in hubs:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), timeout=20)
    assert {"OK", "RATE_LIMITED"} >= set(outcomes), outcomes
    return outcomes.count("OK")


@pytest.mark.timeout(90)
async def test_two_hub_processes_on_one_redis_give_a_member_one_limit(
    simulator: RunningSimulator, tmp_path: Path, redis_url: str
) -> None:
    redis.Redis.from_url(redis_url).delete("txverify:ratelimit:002")  # a full bucket

    shared = await _oks_through_two_hubs(simulator, tmp_path, "--rate-limit-store", redis_url)
    apart = await _oks_through_two_hubs(simulator, tmp_path)

    # Burst 10 at 2/s: 10 at once, perhaps one more refilled during the run.
    assert 10 <= shared <= 11
    # The same without Redis: each hub gives the member its own burst of 10.
    assert apart >= 19
