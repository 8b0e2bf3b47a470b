"""A load result as text, for the terminal."""

from __future__ import annotations

from typing import Any

from txverify.cli.load.results import PERCENTILES, LoadResult, client_json, stages_json


def describe(settings: dict[str, Any]) -> str:
    s = settings
    if s.get("find_capacity"):
        mode = "open loop, capacity search"
    elif s.get("stages"):
        unit = "/s" if s.get("stage_unit") == "rate" else " in flight"
        targets = " -> ".join(f"{st['target']:g}" for st in s["stages"])
        mode = f"{s.get('mode')} loop in {len(s['stages'])} stages ({targets}{unit})"
    elif s.get("rate"):
        mode = f"open loop at {s['rate']:g}/s"
    else:
        mode = f"closed loop, {s.get('concurrency')} in flight"
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
    lines += _client_lines(client_json(result))
    for ex in t.examples:
        lines.append(
            f"  {ex['class']}: {ex['kind']} {ex['qr']} (request {ex['request_id']}): "
            f"expected {ex['expected']}, got {ex['got']} {ex['detail']}".rstrip()
        )
    lines += _stage_lines(stages_json(result)) + _round_lines(result)
    lines += _capacity_lines(result.capacity) + _threshold_lines(result.thresholds)
    return "\n".join(lines)


def _client_lines(c: dict[str, Any]) -> list[str]:
    ended = ", ".join(
        f"{c[k]:,} {label}"
        for k, label in (("timed_out", "timed out"), ("cancelled", "cancelled"),
                         ("not_sent", "not sent"), ("transport", "other transport errors"))
        if c[k]
    )  # fmt: skip
    lines = [f"hub answered  {c['answered']:,}" + (f"; the client ended {ended}" if ended else "")]
    lag = c["send_lag_ms"]
    if lag["p50"] is not None:
        lines.append(
            f"send lag      p50 {lag['p50']:.3f}  p99 {lag['p99']:.3f}  max {lag['max']:.3f} ms"
        )
    if c["note"]:
        lines.append(f"note          {c['note']}")
    return lines


def _stage_lines(stages: list[dict[str, Any]]) -> list[str]:
    if not stages:
        return []
    lines = ["", f"{'stage':<7}{'seconds':>14}{'target':>16}{'req/s':>10}{'p50':>9}{'p99':>9}"
             f"{'errors':>8}"]  # fmt: skip
    for s in stages:
        span = f"{s['start_s']:g}-{s['end_s']:g}"
        target = f"{s['from']:g}->{s['to']:g}"
        lat = s["latency_us"]
        lines.append(
            f"{s['index'] + 1:<7}{span:>14}{target:>16}{s['throughput_rps']:>10,.1f}"
            f"{ms_text(lat['p50']):>9}{ms_text(lat['p99']):>9}{s['errors']:>8,}"
            + _over(s.get("thresholds", []))
        )
    return lines


def _over(judged: list[dict[str, Any]]) -> str:
    """The run's thresholds this stage would fail on its own (shown, not judged)."""
    over = [t["expression"] for t in judged if not t["passed"]]
    return f"  over: {', '.join(over)}" if over else ""


def _round_lines(result: LoadResult) -> list[str]:
    if not result.rounds:
        return []
    lines = ["", f"{'round':<7}{'req/s':>10}{'p50':>9}{'p90':>9}{'p99':>9}{'errors':>8}"]
    for i, r in enumerate(result.rounds, 1):
        f = r.figures()
        lines.append(
            f"{i:<7}{f.throughput:>10,.1f}{ms_text(f.latency_us(50)):>9}"
            f"{ms_text(f.latency_us(90)):>9}{ms_text(f.latency_us(99)):>9}{f.errors:>8,}"
        )
    return lines


def _capacity_lines(capacity: dict[str, Any] | None) -> list[str]:
    if not capacity:
        return []
    b = capacity["bounds"]
    lines = [
        "",
        f"capacity search: p99 <= {b['p99_ms']:g} ms, errors <= {b['error_rate']:.2%}",
        f"{'offered/s':>10}{'got/s':>10}{'p50':>9}{'p99':>9}{'errors':>9}  verdict",
    ]
    for s in capacity["steps"]:
        verdict = "ok" if s["passed"] else f"over ({s['failed_bound']})"
        lines.append(
            f"{s['offered_rps']:>10,.1f}{s['throughput_rps']:>10,.1f}{s['p50_ms']:>9.3f}"
            f"{s['p99_ms']:>9.3f}{s['error_rate']:>9.2%}  {verdict}"
        )
    sustained = capacity["sustained_rps"]
    lines.append(
        f"capacity      {sustained:,.1f}/s sustained (stopped by {capacity['limit']})"
        if sustained is not None
        else f"capacity      none: {capacity['steps'][0]['offered_rps']:g}/s was over the bounds"
    )
    return lines


def _threshold_lines(thresholds: list[dict[str, Any]]) -> list[str]:
    if not thresholds:
        return []
    lines = [""]
    for t in thresholds:
        verdict = "pass" if t["passed"] else "FAIL"
        measured = "n/a" if t["measured"] is None else f"{t['measured']:g}{t['unit']}"
        lines.append(f"threshold     {verdict}  {t['expression']:<24} {t['scope']:<9} {measured}")
    failed = sum(not t["passed"] for t in thresholds)
    lines.append(f"thresholds    {len(thresholds) - failed} passed, {failed} failed")
    return lines
