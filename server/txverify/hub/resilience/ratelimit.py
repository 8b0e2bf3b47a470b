"""Per-member rate limits: token buckets that say how long to wait when a member is over."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

# Concurrency: the hub runs every RPC on one asyncio event loop and nothing here
# awaits, so a take cannot interleave with another. No locks are needed; do not
# share a limiter between threads.

# Refills are float sums (elapsed * rate); without some slack, waiting exactly
# the retry_after we returned could leave 0.9999999 tokens and refuse again.
_EPSILON = 1e-9


# The one range of every rate limit: the hub's own (--rate-limit) and each member's
# (MemberRegistry, the members file; there 0 means the hub's default). The wait an
# empty bucket says is at most 1 / MIN_RATE = 1,000 s, which a RetryInfo holds (a
# rate of 1e-300/s said 1e300 s: no Duration can, and Verify answered UNKNOWN), and
# the shared limiter's numbers stay exact (ratelimit_redis.py). An infinite
# rate would make refills NaN (0 s * inf): "no limit" is None, not a rate.
MIN_RATE = 0.001  # requests per second: one every 1,000 s
MAX_RATE = 1_000_000.0
MAX_BURST = 1_000_000
RATE_RANGE = "0.001-1,000,000 requests per second"
BURST_RANGE = "1,000,000"


def rate_problem(rate: object) -> str | None:
    """Why `rate` is not a rate limit (requests per second), or None when it is one."""
    if isinstance(rate, bool) or not isinstance(rate, int | float):
        return f"must be a number, {RATE_RANGE}, got {rate!r}"[:120]
    if not MIN_RATE <= rate <= MAX_RATE:  # NaN compares false: refused too
        return f"must be {RATE_RANGE}, got {rate!r}"
    return None


def burst_problem(burst: object, *, least: int = 1) -> str | None:
    """Why `burst` is not a burst (least-MAX_BURST calls at once), or None when it is one."""
    if isinstance(burst, bool) or not isinstance(burst, int) or not least <= burst <= MAX_BURST:
        return f"must be a whole number {least}-{BURST_RANGE}, got {burst!r}"[:120]
    return None


@dataclass(frozen=True, slots=True)
class RateLimit:
    """`rate` tokens per second, up to `burst` saved up; each call takes one."""

    rate: float
    burst: int

    def __post_init__(self) -> None:
        problem = rate_problem(self.rate)
        if problem is not None:
            raise ValueError(f"rate {problem}")
        problem = burst_problem(self.burst)
        if problem is not None:
            raise ValueError(f"burst {problem}")


class TokenBucket:
    """One member's tokens; starts full, refills continuously, never holds more than `burst`."""

    def __init__(self, limit: RateLimit, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._limit = limit
        self._clock = clock
        self._tokens = float(limit.burst)
        self._updated = clock()

    @property
    def limit(self) -> RateLimit:
        return self._limit

    def try_take(self) -> float:
        """0.0 when a token was taken; otherwise the seconds until one will be available (> 0)."""
        self._refill()
        if self._tokens >= 1 - _EPSILON:
            self._tokens = max(0.0, self._tokens - 1)
            return 0.0
        return (1 - self._tokens) / self._limit.rate

    def charge(self, tokens: float) -> None:
        """Take `tokens` more after the fact (a not-found answer's extra cost). The bucket
        may go into debt, down to -burst, so the next calls wait for it to refill; the
        floor keeps the longest wait at (burst + 1) / rate, whatever a member did."""
        self._refill()
        self._tokens = max(-float(self._limit.burst), self._tokens - tokens)

    def tokens(self) -> float:
        """The tokens saved now (negative: in debt), for a member reading its usage."""
        self._refill()
        return self._tokens

    def set_limit(self, limit: RateLimit) -> None:
        """Switch to `limit` from now on, keeping the tokens saved (at most the new burst)."""
        self._refill()  # the time so far refills at the old rate
        self._limit = limit
        self._tokens = min(self._tokens, float(limit.burst))

    def is_full(self) -> bool:
        """Whether the bucket is full, i.e. no different from a new one."""
        self._refill()
        return self._tokens >= self._limit.burst

    def _refill(self) -> None:
        now = self._clock()
        # max(): a clock that steps back (only a fake one should) must not drain tokens.
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(float(self._limit.burst), self._tokens + elapsed * self._limit.rate)
        self._updated = now


class RateLimiter:
    """Token buckets by key (member code): a default limit plus per-key overrides.

    Buckets are created on a key's first call. Memory stays bounded by
    forgetting buckets that have refilled to full: a full bucket is exactly
    what a new one would be, so dropping it changes no answer. Such buckets
    are swept at most once every `sweep_every` seconds of clock time, on a
    call to `try_take`, so the sweep's cost (one pass over the buckets) is
    spread over many calls; what stays is the keys active in the last sweep
    period or still refilling.
    """

    def __init__(
        self,
        default: RateLimit | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sweep_every: float = 60.0,
    ) -> None:
        if not (sweep_every > 0 and math.isfinite(sweep_every)):
            raise ValueError(f"sweep_every must be a positive number of seconds, got {sweep_every}")
        self._default = default  # None: unlimited
        self._clock = clock
        self._sweep_every = sweep_every
        self._next_sweep = clock() + sweep_every
        self._overrides: dict[str, RateLimit] = {}
        self._buckets: dict[str, TokenBucket] = {}

    def __len__(self) -> int:
        """Buckets held now (what the sweep bounds)."""
        return len(self._buckets)

    def limit_for(self, key: str) -> RateLimit | None:
        """The limit that applies to `key`: its override, else the default; None = unlimited."""
        return self._overrides.get(key, self._default)

    def set_limit(self, key: str, limit: RateLimit | None) -> None:
        """Override `key`'s limit; None goes back to the default. Applies from the next call."""
        if limit is None:
            self._overrides.pop(key, None)
        else:
            self._overrides[key] = limit
        bucket = self._buckets.get(key)
        if bucket is None:
            return
        effective = self.limit_for(key)
        if effective is None:
            del self._buckets[key]
        else:
            # Switched now rather than at the next take, so the time before the
            # change refills at the old rate.
            bucket.set_limit(effective)

    def try_take(self, key: str) -> float:
        """0.0 when `key` may make a call now; otherwise the seconds to wait before retrying."""
        self._maybe_sweep()
        limit = self.limit_for(key)
        if limit is None:
            return 0.0
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(limit, clock=self._clock)
        return bucket.try_take()

    async def take(self, key: str) -> float:
        """try_take, in the interface Admission awaits (shared limiters ask another server)."""
        return self.try_take(key)

    def charge_now(self, key: str, tokens: float) -> None:
        """Take `tokens` more from `key`'s bucket, into debt if need be (TokenBucket.charge)."""
        limit = self.limit_for(key)
        if limit is None or tokens <= 0:
            return
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(limit, clock=self._clock)
        bucket.charge(tokens)

    async def charge(self, key: str, tokens: float) -> None:
        """charge_now, in the interface Admission awaits."""
        self.charge_now(key, tokens)

    async def tokens(self, key: str) -> float | None:
        """The tokens `key` has now (a new bucket's burst if none is held); None = unlimited."""
        limit = self.limit_for(key)
        if limit is None:
            return None
        bucket = self._buckets.get(key)
        return float(limit.burst) if bucket is None else bucket.tokens()

    def _maybe_sweep(self) -> None:
        now = self._clock()
        if now < self._next_sweep:
            return
        self._next_sweep = now + self._sweep_every
        for key in [key for key, bucket in self._buckets.items() if bucket.is_full()]:
            del self._buckets[key]
