"""Small latency histograms for the figures per second, per kind and of the send lag.

An HdrHistogram at 3 significant digits holds ~30,000 counters; one per second of a long
run would cost hundreds of MB. These keep only the buckets in use, 40 per decade (each
6 % wide: a percentile read from them is within 3 % of the exact one), as a dict
{bucket: count} that pickles small and adds up across load processes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

PER_DECADE = 40

Buckets = dict[int, int]


def bucket_of(us: float) -> int:
    return math.floor(math.log10(max(us, 1.0)) * PER_DECADE)


def upper_us(bucket: int) -> float:
    """The largest latency (µs) that bucket `bucket` holds."""
    return float(10 ** ((bucket + 1) / PER_DECADE))


def record(buckets: Buckets, us: float) -> None:
    b = bucket_of(us)
    buckets[b] = buckets.get(b, 0) + 1


def add(total: Buckets, part: Mapping[int, int]) -> None:
    for b, n in part.items():
        total[b] = total.get(b, 0) + n


def percentile_us(buckets: Mapping[int, int], percentile: float) -> float | None:
    """The value at `percentile` (0-100): the middle of the bucket it falls in, in µs."""
    total = sum(buckets.values())
    if not total:
        return None
    wanted, seen = max(1, math.ceil(total * percentile / 100)), 0
    for b in sorted(buckets):
        seen += buckets[b]
        if seen >= wanted:
            return float(10 ** ((b + 0.5) / PER_DECADE))
    return upper_us(max(buckets))


def coarse(buckets: Iterable[tuple[float, int]], per_decade: int = 10) -> list[dict[str, float]]:
    """(latency µs, count) pairs into `per_decade` log-spaced buckets: [{le_us, count}] in
    increasing le_us, only the buckets with answers in them."""
    out: dict[int, int] = {}
    for us, n in buckets:
        if n:
            b = math.ceil(math.log10(max(us, 1.0)) * per_decade - 1e-9)
            out[b] = out.get(b, 0) + n
    return [{"le_us": round(10 ** (b / per_decade), 1), "count": n} for b, n in sorted(out.items())]
