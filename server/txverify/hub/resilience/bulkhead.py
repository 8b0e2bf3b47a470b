"""Per-issuer bulkhead: a cap on calls in flight, so one slow issuer cannot tie up the hub."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

# Concurrency: the hub runs every RPC on one asyncio event loop and nothing here
# awaits, so acquire and release cannot interleave. No locks are needed; do not
# share a bulkhead between threads.


class Bulkhead:
    """At most `limit` calls in flight; extra calls are refused at once, never queued.

    Refusing rather than waiting keeps a slow issuer's backlog from eating the
    callers' deadlines: they get UNAVAILABLE straight away and can retry.

    Prefer `slot()`, which releases on every way out of the block:

        with bulkhead.slot() as ok:
            if not ok:
                raise overloaded()
            await call()
    """

    def __init__(self, name: str, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"bulkhead {name}: limit must be >= 1, got {limit}")
        self._name = name
        self._limit = limit
        self._in_flight = 0

    @property
    def name(self) -> str:
        return self._name

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def try_acquire(self) -> bool:
        """Take a slot if one is free; False (and nothing taken) when all are in use."""
        if self._in_flight >= self._limit:
            return False
        self._in_flight += 1
        return True

    def release(self) -> None:
        """Give back a slot taken by `try_acquire`.

        A release without an acquire raises RuntimeError: it is a bug in the
        caller, and ignoring it would hide a double release that lets the real
        number in flight exceed the limit.
        """
        if self._in_flight == 0:
            raise RuntimeError(f"bulkhead {self._name}: release without acquire")
        self._in_flight -= 1

    @contextmanager
    def slot(self) -> Iterator[bool]:
        """Yield whether a slot was taken; a taken slot is released when the block exits.

        It yields False instead of raising so the caller chooses its own error,
        and releases on exceptions and cancellation alike.
        """
        acquired = self.try_acquire()
        try:
            yield acquired
        finally:
            if acquired:
                self.release()
