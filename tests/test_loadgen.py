"""`txverify load`: the plan, the judging of answers, the report, and real runs against a hub."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from txverify.cli.load.command import load
from txverify.cli.load.engine import aio_hub_channel, run_load
from txverify.cli.load.html import render_html
from txverify.cli.load.judge import FirstUses, judge_error
from txverify.cli.load.plan import LoadError, LoadPlan, parse_mix
from txverify.cli.load.results import LoadResult, Tally, new_histogram, to_json
from txverify.cli.load.slips import fetch_slips, read_slips
from txverify.cli.slipkinds import not_found
from txverify.hub.app import RunningHub
from txverify.runtime import tls
from txverify.simulators.server import RunningSimulator

POOLS = {
    "valid": tuple(f"V{i}" for i in range(20)),
    "notfound": ("N0", "N1"),
    "bad": ("B0",),
}


def plan_of(**overrides: object) -> LoadPlan:
    settings: dict[str, object] = {"hub": "127.0.0.1:1", "member": "002", "pools": POOLS}
    return LoadPlan(**(settings | overrides))  # type: ignore[arg-type]


async def hub_plan(
    hub: RunningHub, simulator: RunningSimulator, mix: str, **overrides: object
) -> LoadPlan:
    pools = await asyncio.to_thread(fetch_slips, simulator.control_address, 100)
    return plan_of(
        hub=f"127.0.0.1:{hub.port}",
        pools={k: tuple(v) for k, v in pools.items()},
        mix=parse_mix(mix),
        **overrides,
    )


# --- the plan ---


def test_parse_mix_reads_weights_and_refuses_unknown_kinds() -> None:
    assert (("valid", 80), ("bad", 20)) == parse_mix("valid=80, bad=20,notfound=0")
    with pytest.raises(LoadError, match="forged"):
        parse_mix("valid=80,forged=20")
    with pytest.raises(LoadError, match="add up to 0"):
        parse_mix("valid=0")


def test_read_slips_takes_export_kinds_with_malformed_as_bad(tmp_path: Path) -> None:
    path = tmp_path / "slips.txt"
    path.write_text("valid\tQ1\nmalformed\tQ2\n\nvalid\tQ3\n", encoding="utf-8")

    assert {"valid": ["Q1", "Q3"], "bad": ["Q2"]} == read_slips(path)

    path.write_text("Q1\n", encoding="utf-8")
    with pytest.raises(LoadError, match="KIND<TAB>QR"):
        read_slips(path)


def test_plan_without_slips_for_a_kind_of_its_mix_is_refused() -> None:
    with pytest.raises(LoadError, match="expired slips"):
        plan_of(mix=(("valid", 1), ("expired", 1)))


def test_shares_split_the_load_and_own_distinct_slips() -> None:
    plan = plan_of(
        mix=(("valid", 8), ("duplicate", 1), ("bad", 1)),
        rate=90.0,
        requests=101,
        connections=3,
        procs=2,
    )

    shares = plan.shares()

    assert [45.0, 45.0] == [s.plan.rate for s in shares]
    assert [51, 50] == [s.plan.requests for s in shares]
    assert [2, 1] == [s.plan.connections for s in shares]
    assert 8 == len(plan.pools["duplicate"])  # set apart from the valid slips, 4 per process
    assert not set(plan.pools["duplicate"]) & set(plan.pools["valid"])
    first, second = (s.plan.pools for s in shares)
    assert not set(first["valid"]) & set(second["valid"])
    assert not set(first["duplicate"]) & set(second["duplicate"])
    assert {"bad"} == shares[0].shared  # one bad slip: both processes use it


# --- judging answers ---


def test_first_uses_want_valid_once_then_duplicate() -> None:
    uses = FirstUses()

    before = uses.send("014:A")
    assert "" == uses.judge("014:A", "VALID", before, exclusive=True)
    before = uses.send("014:A")
    assert "" == uses.judge("014:A", "DUPLICATE", before, exclusive=True)
    before = uses.send("014:A")
    assert "verified before" in uses.judge("014:A", "VALID", before, exclusive=True)
    before = uses.send("014:B")
    assert "first use" in uses.judge("014:B", "DUPLICATE", before, exclusive=True)


def test_first_uses_of_concurrent_requests_accept_either_order() -> None:
    uses = FirstUses()
    first, second = uses.send("014:A"), uses.send("014:A")

    assert "" == uses.judge("014:A", "DUPLICATE", second, exclusive=True)
    assert "" == uses.judge("014:A", "VALID", first, exclusive=True)


def test_errors_are_expected_failures_no_answer_or_wrong() -> None:
    assert "ok" == judge_error("notfound", "NOT_FOUND/SLIP_NOT_FOUND")
    assert "ok" == judge_error("bad", "INVALID_ARGUMENT/INVALID_SLIP_QR")
    assert "wrong" == judge_error("valid", "NOT_FOUND/SLIP_NOT_FOUND")
    assert "wrong" == judge_error("expired", "NOT_FOUND/SLIP_NOT_FOUND")
    assert "failed" == judge_error("valid", "UNAVAILABLE/ISSUER_UNAVAILABLE")
    assert "failed" == judge_error("valid", "DEADLINE_EXCEEDED")


async def test_channel_with_certs_presents_the_members_certificate(tmp_path: Path) -> None:
    tls.init_dev_pki(tmp_path, ["002"])

    channel = aio_hub_channel("127.0.0.1:1", certs=tmp_path, identity="002")
    await channel.close()

    with pytest.raises(FileNotFoundError):
        aio_hub_channel("127.0.0.1:1", certs=tmp_path, identity="014")


# --- the report ---


def sample_result() -> LoadResult:
    histogram = new_histogram()
    for us in (800, 1200, 1500, 9000):
        histogram.record_value(us)
    tally = Tally(histogram=histogram.encode(), elapsed=2.0, cpu_seconds=0.5)
    tally.outcomes.update({("valid", "OK/VALID"): 3, ("valid", "NOT_FOUND/SLIP_NOT_FOUND"): 1})
    tally.wrong[("valid", "NOT_FOUND/SLIP_NOT_FOUND")] = 1
    tally.examples.append(
        {"class": "wrong", "kind": "valid", "qr": "Q", "request_id": "r-1", "expected": "OK",
         "got": "NOT_FOUND/SLIP_NOT_FOUND", "detail": "<no such slip>"}
    )  # fmt: skip
    for second, us in ((0, 800), (0, 1200), (1, 1500), (1, 9000)):
        tally.count(second, us, "NOT_FOUND/SLIP_NOT_FOUND" if us == 9000 else "OK/VALID",
                    error=us == 9000)  # fmt: skip
    return LoadResult.merge(plan_of().settings(), [tally, Tally(elapsed=1.0)])


def test_json_report_has_throughput_percentiles_outcomes_and_timeline() -> None:
    report = to_json(sample_result())

    assert 4 == report["requests"]
    assert 2.0 == report["throughput_rps"]
    assert {"p50", "p90", "p99", "p99.9", "max", "min", "mean"} <= set(report["latency_us"])
    assert 9000 == pytest.approx(report["latency_us"]["max"], rel=1e-3)
    assert {"OK/VALID": 3, "NOT_FOUND/SLIP_NOT_FOUND": 1} == report["outcomes"]
    assert {"OK": 3, "NOT_FOUND": 1} == report["by_status"]
    assert 1 == report["wrong_answers"]["count"]
    assert "r-1" == report["examples"][0]["request_id"]
    assert [2, 2] == [s["completed"] for s in report["timeline"]]
    assert [0, 1] == [s["errors"] for s in report["timeline"]]
    assert 0.5 == report["client_cpu_s"]
    assert 1 == report["exit_code"]
    assert 2 == report["processes"]
    assert report["percentile_curve"][-1]["percentile"] == 100.0


def test_html_report_of_a_result_is_self_contained_with_its_charts() -> None:
    # tests/test_load_html.py covers the page section by section; here: from a LoadResult.
    page = render_html(to_json(sample_result()))

    assert "http://" not in page
    assert "https://" not in page
    assert "<script" not in page
    assert page.count("<svg") >= 3  # over time, latency over time, the histogram
    assert "&lt;no such slip&gt;" in page  # examples are escaped


# --- against a real hub (in-process fixtures; the load runs in spawned processes) ---


async def test_closed_loop_counts_every_outcome_by_reason_without_wrong_answers(
    hub: RunningHub, simulator: RunningSimulator
) -> None:
    plan = await hub_plan(
        hub, simulator, "valid=6,duplicate=2,notfound=1,bad=1", concurrency=8, duration=2.0
    )

    result = await asyncio.to_thread(run_load, plan)

    by_kind: Counter[str] = Counter()
    for (kind, _), n in result.total.outcomes.items():
        by_kind[kind] += n
    assert 0 == result.wrong_count
    assert 0 == result.failed_count
    assert by_kind["notfound"] == result.total.outcomes["notfound", "NOT_FOUND/SLIP_NOT_FOUND"]
    assert by_kind["bad"] == result.total.outcomes["bad", "INVALID_ARGUMENT/INVALID_SLIP_QR"]
    valid = result.total.outcomes["valid", "OK/VALID"]
    assert by_kind["valid"] == valid + result.total.outcomes["valid", "OK/DUPLICATE"]
    assert 0 < valid <= len(plan.pools["valid"])  # each slip VALID once, DUPLICATE after
    assert result.total.outcomes["duplicate", "OK/DUPLICATE"] > 0
    assert result.requests == result.histogram.get_total_count()
    assert result.requests > 50
    assert result.total.cpu_seconds > 0
    assert 0 == result.exit_code


async def test_open_loop_sends_at_the_asked_rate(
    hub: RunningHub, simulator: RunningSimulator
) -> None:
    plan = await hub_plan(hub, simulator, "valid=8,notfound=1,bad=1", rate=100.0, duration=2.0)

    result = await asyncio.to_thread(run_load, plan)

    assert 200 == pytest.approx(result.requests, rel=0.15)
    assert 0 == result.wrong_count


async def test_two_processes_merge_their_counts_and_histograms(
    hub: RunningHub, simulator: RunningSimulator
) -> None:
    plan = await hub_plan(
        hub, simulator, "valid=8,expired=1,unknownissuer=1", requests=300, procs=2, connections=2
    )

    result = await asyncio.to_thread(run_load, plan)

    assert 2 == result.processes
    assert 300 == result.requests
    assert 300 == result.histogram.get_total_count()
    assert 300 == sum(result.total.completed)
    assert 0 == result.wrong_count


async def test_a_wrong_answer_is_reported_with_examples_and_exits_1(
    hub: RunningHub, tmp_path: Path
) -> None:
    slips = tmp_path / "slips.txt"
    slips.write_text(f"valid\t{not_found(['014'], 1)[0]}\n", encoding="utf-8")
    app = typer.Typer()
    app.command()(load)
    args = ["--slips", str(slips), "--requests", "5", "--concurrency", "2"]
    args += ["--hub", f"127.0.0.1:{hub.port}", "--member", "002", "--no-progress"]
    args += ["--json", str(tmp_path / "r.json"), "--html", str(tmp_path / "r.html")]

    outcome = await asyncio.to_thread(CliRunner().invoke, app, args)

    assert 1 == outcome.exit_code, outcome.output
    assert "wrong answers 5" in outcome.output
    report = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert {"valid": {"NOT_FOUND/SLIP_NOT_FOUND": 5}} == report["wrong_answers"]["by_kind"]
    assert "NOT_FOUND/SLIP_NOT_FOUND" == report["examples"][0]["got"]
    assert "<svg" in (tmp_path / "r.html").read_text(encoding="utf-8")
