"""Rate limits shared by every hub replica: one GCRA bucket per member in Redis.

Why Redis and not PostgreSQL: a limit is checked on every Verify. In
PostgreSQL that is an UPDATE of one hot row per member per request: a row lock
that serialises the member's verifications across replicas and a WAL write
each, on the database that already carries the audit inserts (the part that
limits scale-out). Redis runs the check as one atomic script in memory
(~0.1 ms on loopback), and a limit needs no durability: a restarted Redis
only means full buckets.

GCRA (the generic cell rate algorithm) keeps one number per member, the
"theoretical arrival time": it is exactly a token bucket of `rate` per second
and `burst` deep, with Redis's own clock, so replicas with drifting clocks
agree. When Redis cannot be reached the hub does not stop verifying: it falls
back to its own per-process buckets (a member may then get N replicas times
its limit), logs it once, and goes back to Redis as soon as it answers.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from txverify.hub.resilience.ratelimit import RateLimit, RateLimiter

log = logging.getLogger(__name__)

# KEYS[1]: the member's key. ARGV: emission interval (µs per call = 1e6 / rate) and
# tolerance (µs = (burst - 1) * interval). Returns 0 when the call may go now,
# otherwise the µs to wait. The time comes from Redis, the same for every replica.
_GCRA = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local allow_at = tat - tolerance
if now < allow_at then return allow_at - now end
local new_tat = tat + interval
-- %.0f: Lua 5.1 would write the µs with 14 significant digits only.
local ttl_ms = math.ceil((new_tat - now) / 1000) + 1
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', ttl_ms)
return 0
"""
# A not-found answer's extra cost, charged after the fact (only then is it known):
# KEYS[1] as above; ARGV: interval (µs) and the tokens to charge. The bucket may go
# into debt (the TAT past now + burst intervals) down to -burst tokens, as the local
# TokenBucket.charge does: ARGV[3] is that cap, 2 * burst * interval µs past now.
_CHARGE = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + tonumber(ARGV[1]) * tonumber(ARGV[2])
local cap = now + tonumber(ARGV[3])
if new_tat > cap then new_tat = cap end
local ttl_ms = math.ceil((new_tat - now) / 1000) + 1
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', ttl_ms)
return 0
"""
# The µs of saved-up calls' worth of time left: TAT - now (0 for a full bucket), for
# the usage report (tokens = burst - that / interval).
_AHEAD = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then return 0 end
return string.format('%.0f', tat - now)
"""
RETRY_REDIS_AFTER = 1.0  # seconds on the local buckets before trying Redis again


class SharedRateLimiter:
    """The RateLimiter's interface, with the buckets in Redis (`redis://host:port/db`)."""

    def __init__(
        self,
        url: str,
        default: RateLimit | None,
        *,
        prefix: str = "txverify:ratelimit:",
        timeout: float = 0.05,
    ) -> None:
        self.local = RateLimiter(default)  # limits, and the buckets while Redis is away
        self.prefix = prefix
        # A short timeout: a slow Redis must not make every Verify slow; past it
        # the local buckets decide.
        self._redis: Any = aioredis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self._script: Any = self._redis.register_script(_GCRA)
        self._charge: Any = self._redis.register_script(_CHARGE)
        self._ahead: Any = self._redis.register_script(_AHEAD)
        self._local_until = 0.0  # monotonic time until which Redis is not tried
        self.fallbacks = 0  # calls decided locally because Redis failed

    def limit_for(self, key: str) -> RateLimit | None:
        return self.local.limit_for(key)

    def set_limit(self, key: str, limit: RateLimit | None) -> None:
        self.local.set_limit(key, limit)

    async def take(self, key: str) -> float:
        """0.0 when `key` may make a call now; otherwise the seconds to wait."""
        limit = self.local.limit_for(key)
        if limit is None:
            return 0.0
        if time.monotonic() >= self._local_until:
            interval = 1_000_000 / limit.rate
            try:
                wait_us = await self._script(
                    keys=[self.prefix + key], args=[interval, (limit.burst - 1) * interval]
                )
            except (RedisError, OSError) as error:
                self._redis_failed(error)
            else:
                return int(wait_us) / 1_000_000
        self.fallbacks += 1
        return self.local.try_take(key)

    async def charge(self, key: str, tokens: float) -> None:
        """Take `tokens` more from `key`'s shared bucket, into debt if need be. Only a
        not-found answer calls it (one more round trip for those; none for others)."""
        limit = self.local.limit_for(key)
        if limit is None or tokens <= 0:
            return
        if time.monotonic() >= self._local_until:
            interval = 1_000_000 / limit.rate
            try:
                await self._charge(
                    keys=[self.prefix + key], args=[interval, tokens, 2 * limit.burst * interval]
                )
            except (RedisError, OSError) as error:
                self._redis_failed(error)
            else:
                return
        self.local.charge_now(key, tokens)

    async def tokens(self, key: str) -> float | None:
        """The tokens `key` has now in the shared bucket; None = unlimited."""
        limit = self.local.limit_for(key)
        if limit is None:
            return None
        if time.monotonic() >= self._local_until:
            try:
                ahead_us = await self._ahead(keys=[self.prefix + key])
            except (RedisError, OSError) as error:
                self._redis_failed(error)
            else:
                return limit.burst - int(ahead_us) * limit.rate / 1_000_000
        return await self.local.tokens(key)

    def _redis_failed(self, error: BaseException) -> None:
        self._local_until = time.monotonic() + RETRY_REDIS_AFTER
        log.warning(
            "rate limits: Redis failed (%s); per-process buckets for %.0fs",
            error,
            RETRY_REDIS_AFTER,
        )

    async def close(self) -> None:
        await self._redis.aclose()
