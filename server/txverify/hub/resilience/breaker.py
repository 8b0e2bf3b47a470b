"""Per-issuer circuit breaker: stop calling an issuer that keeps failing; probe after a cooldown."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

# Concurrency: the hub runs every RPC on one asyncio event loop and nothing here
# awaits, so each method runs to completion before another task can touch the
# breaker. No locks are needed; do not share a breaker between threads.


class CircuitState(StrEnum):
    """CLOSED lets calls through, OPEN refuses them, HALF_OPEN lets one probe through."""

    CLOSED = "CLOSED"
    OPEN = "OPEN"
    HALF_OPEN = "HALF_OPEN"


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    """When to stop calling an issuer and how long to wait before trying it again."""

    failure_threshold: int = 5  # consecutive failures that open the circuit
    cooldown: float = 5.0  # seconds OPEN before one probe is let through
    # ... and those failures must span at least this many seconds. A count alone
    # cuts off an issuer that answers most inquiries: at 30% errors a run of 5
    # failures comes every ~600 calls, i.e. every 2 s at 300 inquiries/s, so the
    # circuit would be open most of the time. A run spanning a second at that
    # rate is ~300 failures in a row, which only a dead issuer produces. At a
    # trickle the count decides; 0 opens on the count alone.
    failing_seconds: float = 1.0

    def __post_init__(self) -> None:
        if self.failure_threshold < 1:
            raise ValueError(f"failure_threshold must be >= 1, got {self.failure_threshold}")
        if not (0 <= self.failing_seconds and math.isfinite(self.failing_seconds)):
            raise ValueError(
                f"failing_seconds must be a finite number >= 0, got {self.failing_seconds}"
            )
        # Finite as well as positive: retry_after is reported to callers, and an
        # infinite (or NaN) wait cannot be written into a RetryInfo duration.
        if not (self.cooldown > 0 and math.isfinite(self.cooldown)):
            raise ValueError(f"cooldown must be a positive number of seconds, got {self.cooldown}")


ChangeHook = Callable[[str, CircuitState, CircuitState], None]  # (name, old, new)


class CircuitBreaker:
    """Counts consecutive failures of one issuer and refuses calls while it is deemed down.

    Down means `failure_threshold` failures in a row, the first of them at least
    `failing_seconds` before the last.

    Callers ask `allow()` before a call and report its end with exactly one of
    `record_success`, `record_failure` or `record_ignored`. Results cannot be
    told apart by call, so while HALF_OPEN any result is taken as the probe's,
    and while OPEN a late failure of a call let through before it opened is
    dropped (the cooldown runs its course), while a late success lets one probe
    through at once: the issuer is answering again (a flapping one came back
    just as its circuit opened), and the probe decides.
    """

    def __init__(
        self,
        name: str,
        settings: BreakerSettings = BreakerSettings(),  # frozen: one shared default is safe
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: ChangeHook | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self._clock = clock
        self._on_change = on_change
        self._state = CircuitState.CLOSED
        self._failures = 0  # consecutive, counted while CLOSED
        self._failing_since = 0.0  # clock time of the first of those failures
        self._opened_at = 0.0  # clock time of the last CLOSED/HALF_OPEN -> OPEN
        self._probe_out = False  # HALF_OPEN: the one probe has been let through

    @property
    def state(self) -> CircuitState:
        # OPEN becomes HALF_OPEN lazily, when someone looks: no timer task to
        # start, cancel or leak, and the clock stays injectable.
        if (
            self._state is CircuitState.OPEN
            and self._clock() - self._opened_at >= self.settings.cooldown
        ):
            self._move_to(CircuitState.HALF_OPEN)
        return self._state

    @property
    def failing(self) -> bool:
        """Whether the last result was a failure (or the circuit is not CLOSED)."""
        return self.state is not CircuitState.CLOSED or self._failures > 0

    @property
    def retry_after(self) -> float:
        """Seconds until a probe may be let through; 0 when not OPEN."""
        if self.state is not CircuitState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self.settings.cooldown - self._clock())

    def allow(self) -> bool:
        """Whether a call may go to the issuer now; a True while HALF_OPEN is the probe."""
        state = self.state
        if state is CircuitState.CLOSED:
            return True
        if state is CircuitState.HALF_OPEN and not self._probe_out:
            self._probe_out = True
            return True
        return False

    def record_success(self) -> None:
        """The issuer answered: reset the count, close the circuit after a probe, and
        while OPEN end the cooldown (a late answer: one probe may go now)."""
        state = self.state
        if state is CircuitState.CLOSED:
            self._failures = 0
        elif state is CircuitState.HALF_OPEN:
            self._move_to(CircuitState.CLOSED)
        else:
            self._move_to(CircuitState.HALF_OPEN)

    def record_failure(self) -> None:
        """The issuer failed: count it; open at the threshold, or again after a failed probe."""
        state = self.state
        if state is CircuitState.CLOSED:
            now = self._clock()
            if self._failures == 0:
                self._failing_since = now
            self._failures += 1
            if (
                self._failures >= self.settings.failure_threshold
                and now - self._failing_since >= self.settings.failing_seconds
            ):
                self._open()
        elif state is CircuitState.HALF_OPEN:
            self._open()

    def record_ignored(self) -> None:
        """The call ended telling nothing about the issuer (e.g. the caller cancelled it).

        Frees the half-open probe slot so the next caller can probe; without this
        a cancelled probe would keep the circuit refusing forever.
        """
        if self.state is CircuitState.HALF_OPEN:
            self._probe_out = False

    def probe_now(self) -> None:
        """End the cooldown early: the issuer is known to be back, let one probe through now.

        OPEN becomes HALF_OPEN at once. While HALF_OPEN the probe slot is freed again:
        the caller replaced the connection the probe out went on, so that probe's
        result must not count (the caller drops it) and a new one is needed. A CLOSED
        circuit stays as it is. The caller decides when the issuer is back; this only
        moves the state, so the breaker needs no clock of its own for it.
        """
        if self.state is not CircuitState.CLOSED:
            self._move_to(CircuitState.HALF_OPEN)

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._move_to(CircuitState.OPEN)

    def _move_to(self, new: CircuitState) -> None:
        old = self._state
        self._state = new
        self._failures = 0
        self._probe_out = False
        # Last, so a hook that raises or looks at the breaker sees a consistent one.
        if self._on_change is not None and old is not new:
            self._on_change(self.name, old, new)
