"""What the console shows live: each issuer's verifications per second with p50/p99
latency, and the latest verifications, masked.

The hub's Router tells it of each answered Verify (`verified`, an observer as
the metrics are): two appends, ~1.5 µs.
Nothing personal is kept: the codes of the members involved, the status and
reason, the verdict, the latency, and the transaction reference with all but
its first and last four characters hidden.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Any

from txverify.hub.outcome import Verification
from txverify.units import BANGKOK

WINDOW = 60  # seconds of history in the charts
LATEST = 50  # verifications in the "latest" list


def mask_reference(trans_ref: str) -> str:
    """`0141…9A3F`: enough to tell slips apart on screen, not enough to query one."""
    if len(trans_ref) <= 8:
        return "…" if trans_ref else ""
    return f"{trans_ref[:4]}…{trans_ref[-4:]}"


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending, non-empty list."""
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


class LiveFeed:
    """Per-second latency buckets per issuer for the last WINDOW seconds, and the
    LATEST verifications."""

    def __init__(
        self, *, window: int = WINDOW, latest: int = LATEST, clock: Callable[[], float] = time.time
    ) -> None:
        self.window = window
        self.clock = clock
        # second -> issuer -> (latencies in ms, failures)
        self._seconds: dict[int, dict[str, tuple[list[float], list[int]]]] = {}
        self._summaries: dict[int, dict[str, tuple[int, float | None, float | None, int]]] = {}
        self._latest: deque[tuple[int, float, Verification]] = deque(maxlen=latest)
        self._seq = itertools.count(1)

    def verified(self, v: Verification) -> None:
        """One answered Verify (an Observer of the Router)."""
        now = self.clock()
        second = int(now)
        issuers = self._seconds.get(second)
        if issuers is None:
            issuers = self._seconds[second] = {}
            self._prune(second)
        latencies, failures = issuers.setdefault(v.issuer, ([], [0]))
        latencies.append(v.elapsed * 1000)
        if v.status != "OK":
            failures[0] += 1
        # Kept raw; made into rows (time formatted, reference masked) only when shown.
        self._latest.appendleft((next(self._seq), now, v))

    def _prune(self, second: int) -> None:
        horizon = second - self.window - 1
        for table in (self._seconds, self._summaries):
            for old in [s for s in table if s <= horizon]:
                del table[old]

    def _summary(self, second: int) -> dict[str, tuple[int, float | None, float | None, int]]:
        """A complete second per issuer: (verifications, p50 ms, p99 ms, failures); computed
        once, then its latencies are dropped."""
        done = self._summaries.get(second)
        if done is None:
            done = {}
            for issuer, (latencies, failures) in self._seconds.pop(second, {}).items():
                ordered = sorted(latencies)
                done[issuer] = (
                    len(ordered),
                    round(percentile(ordered, 50), 2),
                    round(percentile(ordered, 99), 2),
                    failures[0],
                )
            self._summaries[second] = done
        return done

    def rates(self) -> dict[str, Any]:
        """The last `window` complete seconds: per issuer, verifications (rate), p50 and
        p99 latency in ms (None where there were none) and failures, aligned with
        `seconds` (epoch seconds)."""
        last = int(self.clock()) - 1  # the current second is still filling
        seconds = list(range(last - self.window + 1, last + 1))
        summaries = [self._summary(s) for s in seconds]
        issuers = sorted({i for summary in summaries for i in summary})
        out: dict[str, dict[str, list[Any]]] = {
            i: {"rate": [], "p50_ms": [], "p99_ms": [], "errors": []} for i in issuers
        }
        for summary in summaries:
            for issuer, series in out.items():
                rate, p50, p99, failures = summary.get(issuer, (0, None, None, 0))
                series["rate"].append(rate)
                series["p50_ms"].append(p50)
                series["p99_ms"].append(p99)
                series["errors"].append(failures)
        return {"seconds": seconds, "issuers": out}

    def latest(self) -> list[dict[str, Any]]:
        """The latest verifications, newest first."""
        return [
            {
                "seq": seq,
                "at": datetime.fromtimestamp(at, BANGKOK).isoformat("T", "seconds"),
                "requester": v.requester,
                "issuer": v.issuer,
                "trans_ref": mask_reference(v.trans_ref),
                "status": v.status,
                "reason": v.reason,
                "verdict": v.verdict_name if v.status == "OK" else "",
                "latency_ms": round(v.elapsed * 1000, 2),
            }
            for seq, at, v in self._latest
        ]
