"""A load result as text, for the terminal."""

from __future__ import annotations

from typing import Any

from txverify.cli.load.results import PERCENTILES, LoadResult


def describe(settings: dict[str, Any]) -> str:
    s = settings
    mode = (
        f"open loop at {s['rate']:g}/s"
        if s.get("rate")
        else f"closed loop, {s.get('concurrency')} in flight"
    )
    stop = " or ".join(
        x
        for x in (
            f"{s['duration']:g} s" if s.get("duration") else "",
            f"{s['requests']} requests" if s.get("requests") else "",
        )
        if x
    )
    return (
        f"{mode}, {s.get('connections')} connection(s), {s.get('procs')} process(es), {stop}; "
        f"hub {s.get('hub')} as {s.get('member')}"
    )


def ms_text(us: float) -> str:
    return f"{us / 1000:.3f}"


def render_text(result: LoadResult) -> str:
    t = result.total
    n = result.requests
    lines = [
        f"txverify load: {describe(result.settings)}",
        f"requests      {n:,} in {t.elapsed:.2f} s = {result.throughput:,.1f}/s",
        "latency (ms)  "
        + "  ".join(f"p{p:g} {ms_text(result.latency_us(p))}" for p in PERCENTILES)
        + f"  max {ms_text(result.histogram.get_max_value() if n else 0)}",
        f"client CPU    {t.cpu_seconds:.2f} s"
        + (f" ({t.cpu_seconds * 1000 / n:.3f} ms per request)" if n else ""),
    ]
    if result.settings.get("rate"):
        lines.append(f"send lag max  {t.send_lag_max * 1000:.1f} ms (latency counts it)")
    lines += ["", f"{'kind':<14}{'outcome':<34}{'count':>10}"]
    for (kind, outcome), count in sorted(t.outcomes.items()):
        mark = " WRONG" if (kind, outcome) in t.wrong else ""
        mark = mark or (" FAILED" if (kind, outcome) in t.failed else "")
        lines.append(f"{kind:<14}{outcome:<34}{count:>10,}{mark}")
    lines += ["", f"wrong answers {result.wrong_count:,}", f"no answer     {result.failed_count:,}"]
    for ex in t.examples:
        lines.append(
            f"  {ex['class']}: {ex['kind']} {ex['qr']} (request {ex['request_id']}): "
            f"expected {ex['expected']}, got {ex['got']} {ex['detail']}".rstrip()
        )
    return "\n".join(lines)
