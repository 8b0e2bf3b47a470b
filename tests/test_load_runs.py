"""`txverify load` against a real hub: stages on schedule, thresholds and their exit codes,
the outputs (JSON, JUnit, CSV, Prometheus), the capacity search against a hub slowed by
an issuer fault, and `txverify load compare` on runs of two hubs."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from conftest import HubFactory
from txverify import miniqr
from txverify.cli.cli import app
from txverify.cli.load.capacity import Search, find_capacity
from txverify.cli.load.engine import run_load
from txverify.cli.load.plan import LoadPlan, parse_mix
from txverify.cli.load.results import to_json
from txverify.cli.load.schedule import CONCURRENCY, parse_stage
from txverify.cli.load.slips import fetch_slips
from txverify.cli.slipkinds import not_found
from txverify.hub.app import RunningHub
from txverify.simulators.server import RunningSimulator
from txverify.v1 import simulator_pb2, simulator_pb2_grpc

# slow: real processes or long runs; `make test-fast` leaves it out (`make test` runs it).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

MIX = "valid=8,notfound=1,bad=1"


async def plan_for(hub: RunningHub, simulator: RunningSimulator, **fields: Any) -> LoadPlan:
    pools = await asyncio.to_thread(fetch_slips, simulator.control_address, 200)
    return LoadPlan(
        hub=f"127.0.0.1:{hub.port}",
        member="002",
        pools={k: tuple(v) for k, v in pools.items()},
        **({"mix": parse_mix(MIX)} | fields),
    )


async def txverify(*args: str) -> tuple[int, str]:
    outcome = await asyncio.to_thread(CliRunner().invoke, app, list(args), env={"COLUMNS": "200"})
    return outcome.exit_code, outcome.output


def load_args(hub: RunningHub, simulator: RunningSimulator, *more: str) -> list[str]:
    return ["load", "--hub", f"127.0.0.1:{hub.port}", "--member", "002", "--control",
            simulator.control_address, "--mix", MIX, "--no-progress", *more]  # fmt: skip


# --- stages ---


async def test_open_loop_stages_send_per_second_what_the_schedule_asks(
    hub: RunningHub, simulator: RunningSimulator
) -> None:
    stages = tuple(parse_stage(s) for s in ("0s:40", "2s:40", "3s:160"))
    plan = await plan_for(hub, simulator, stages=stages, procs=2, connections=2)

    report = to_json(await asyncio.to_thread(run_load, plan))

    seconds = report["timeseries"][:5]
    assert [40, 40, 60, 100, 140] == [round(s["offered"]) for s in seconds]
    for s in seconds:  # each process sends its half on time; the edges move one request
        assert s["sent"] == pytest.approx(s["offered"], rel=0.05, abs=2), s
    assert [1, 1, 2, 2, 2] == [s["stage"] for s in seconds]  # the 0 s step holds no second
    assert [0, 1, 2] == [st["index"] for st in report["stages"]]
    steady, ramp = report["stages"][1], report["stages"][2]
    assert 80 == pytest.approx(steady["requests"], abs=3)
    assert 300 == pytest.approx(ramp["requests"], abs=4)  # (40 + 160) / 2 * 3 s
    assert (40.0, 160.0) == (ramp["from"], ramp["to"])
    assert 0 == report["wrong_answers"]["count"]
    assert report["requests"] == report["client"]["answered"]


async def test_closed_loop_stages_change_the_callers_in_flight(
    hub: RunningHub, simulator: RunningSimulator
) -> None:
    stages = tuple(parse_stage(s, CONCURRENCY) for s in ("0s:1", "1.5s:1", "0s:6", "1.5s:6"))
    plan = await plan_for(hub, simulator, stages=stages, stage_unit=CONCURRENCY)

    report = to_json(await asyncio.to_thread(run_load, plan))

    one, six = report["stages"][1], report["stages"][3]
    assert "concurrency" == one["unit"] == six["unit"]
    # More callers, more answers: the in-process hub shares this test's CPU, so not 6x.
    assert six["throughput_rps"] > 1.5 * one["throughput_rps"]
    assert "closed" == report["settings"]["mode"]


# --- thresholds, exit codes and outputs ---


async def test_thresholds_pass_and_every_output_is_written(
    hub: RunningHub, simulator: RunningSimulator, tmp_path: Path
) -> None:
    files = {k: tmp_path / f"run.{k}" for k in ("json", "junit", "csv", "requests", "prom")}

    code, output = await txverify(*load_args(
        hub, simulator, "--stage", "0s:50", "--stage", "2s:50",
        "--threshold", "p99<2s", "--threshold", "errors<1%", "--threshold", "stage2:rate>=40",
        "--json", str(files["json"]), "--junit", str(files["junit"]), "--csv", str(files["csv"]),
        "--csv-requests", str(files["requests"]), "--prometheus", str(files["prom"]),
    ))  # fmt: skip

    assert 0 == code, output
    assert "thresholds    3 passed, 0 failed" in output
    report = json.loads(files["json"].read_text(encoding="utf-8"))
    assert [True, True, True] == [t["passed"] for t in report["thresholds"]]
    assert ["run", "run", "stage 2"] == [t["scope"] for t in report["thresholds"]]
    # The run's own thresholds are shown per stage too (not counted in the exit code).
    assert [["p99<2s", "errors<1%"]] * 2 == [
        [t["expression"] for t in st["thresholds"]] for st in report["stages"]
    ]
    suite = ET.parse(files["junit"]).getroot()
    assert ("4", "0") == (suite.get("tests"), suite.get("failures"))
    rows = list(csv.DictReader(files["requests"].read_text(encoding="utf-8").splitlines()))
    assert report["requests"] == len(rows)
    assert {"answered"} == {r["origin"] for r in rows}
    assert sorted(float(r["scheduled_s"]) for r in rows) == [float(r["scheduled_s"]) for r in rows]
    per_second = list(csv.DictReader(files["csv"].read_text(encoding="utf-8").splitlines()))
    assert report["requests"] == sum(int(r["completed"]) for r in per_second)
    assert [] == sorted(p.name for p in os.scandir(tmp_path) if ".part" in p.name)  # merged
    prom = files["prom"].read_text(encoding="utf-8")
    assert f"txverify_load_latency_seconds_count {report['requests']}" in prom
    assert 'txverify_load_threshold_passed{expression="errors<1%",scope="run"} 1' in prom


@pytest.mark.parametrize(
    ("thresholds", "code"),
    [
        (["p50<1us"], 3),  # a latency no hub meets
        (["rate>=100000"], 3),
        (["requests<5"], 3),
        (["p99<5s", "stage2:p50<1us"], 3),  # the run passes; its stage 2 does not
        (["p99<5s", "errors<=0"], 0),
    ],
)
async def test_a_failed_threshold_exits_3(
    hub: RunningHub, simulator: RunningSimulator, tmp_path: Path, thresholds: list[str], code: int
) -> None:
    given = [x for t in thresholds for x in ("--threshold", t)]
    junit = tmp_path / "t.xml"

    got, output = await txverify(*load_args(
        hub, simulator, "--stage", "0s:40", "--stage", "1s:40", "--stage", "1s:40",
        "--junit", str(junit), *given,
    ))  # fmt: skip

    assert code == got, output
    failures = ET.parse(junit).getroot().findall("testcase/failure")
    assert (code == 3) == bool(failures)


async def test_a_wrong_answer_exits_1_even_when_a_threshold_fails(
    hub: RunningHub, tmp_path: Path
) -> None:
    slips = tmp_path / "slips.txt"
    slips.write_text(f"valid\t{not_found(['014'], 1)[0]}\n", encoding="utf-8")

    code, output = await txverify(
        "load", "--hub", f"127.0.0.1:{hub.port}", "--member", "002", "--slips", str(slips),
        "--requests", "5", "--no-progress", "--threshold", "p50<1us",
    )  # fmt: skip

    assert 1 == code, output
    assert "FAIL  p50<1us" in output


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--threshold", "p99<5%"], "ms, us or s"),
        (["--threshold", "stage2:p99<5ms"], "no stage 2 (no stages given)"),
        (["--stage", "10s:100", "--rate", "5"], "drop --rate"),
        (["--stage", "fast"], "DURATION:TARGET"),
        (["--stage", "5s:100", "--concurrency-stage", "5s:4"], "not both"),
        (["--find-capacity", "--rate", "10"], "sets the rate itself"),
        (["--find-capacity", "--growth", "1"], "--growth must be above 1"),
        (["--rounds", "0"], "--rounds must be at least 1"),
    ],
)
async def test_bad_load_flags_exit_2_before_anything_is_sent(args: list[str], problem: str) -> None:
    code, output = await txverify("load", "--hub", "127.0.0.1:1", "--member", "002", *args)

    assert 2 == code, output
    assert problem in " ".join(output.split())


# --- the capacity search ---


async def test_the_capacity_search_finds_what_a_slowed_hub_sustains(
    hub_factory: HubFactory,
    simulator: RunningSimulator,
    control: simulator_pb2_grpc.BankSimulatorAsyncStub,
) -> None:
    # Every issuer answers after 50 ms and the hub lets 2 inquiries per issuer wait at
    # once: about 40/s per issuer, some 100-140/s over the slips' issuers; above that
    # the hub refuses (RESOURCE_EXHAUSTED), and the errors bound stops the search.
    for code in simulator.nodes:
        faults = simulator_pb2.Faults(latency_ms=50)
        await control.SetFaults(simulator_pb2.SetFaultsRequest(bank=code, faults=faults))
    hub = await hub_factory(max_in_flight_per_issuer=2)
    plan = await plan_for(hub, simulator, mix=parse_mix("valid=1"))
    # As many slips of each issuer (their banks keep them 7 or 30 days, so the pool
    # has more of some): the load shares out evenly, as the bound above assumes.
    by_bank: dict[str, list[str]] = {}
    for qr in plan.pools["valid"]:
        by_bank.setdefault(miniqr.parse(qr).sending_bank, []).append(qr)
    each = min(map(len, by_bank.values()))
    even = [qrs[i] for i in range(each) for qrs in by_bank.values()]
    plan = dataclasses.replace(plan, pools={**plan.pools, "valid": tuple(even)})
    search = Search(start_rate=30, growth=2, refine=1, step_seconds=2, max_p99_ms=1000)

    result = await asyncio.to_thread(find_capacity, plan, search, run_load)

    capacity = to_json(result)["capacity"]
    steps = capacity["steps"]
    assert [30.0, 60.0] == [s["offered_rps"] for s in steps[:2]]
    assert all(s["passed"] for s in steps[:2]), steps[:2]
    assert any(s["failed_bound"] == "errors" for s in steps)
    assert 60 <= capacity["sustained_rps"] < 240
    assert all(s["p50_ms"] >= 50 for s in steps)  # every answer waited on the slow issuer
    assert "errors" == capacity["limit"]
    assert [s["offered_rps"] for s in steps] == [st["to"] for st in to_json(result)["stages"]]


# --- compare ---


async def test_compare_tells_a_slower_hub_beyond_the_spread_of_the_rounds(
    hub_factory: HubFactory,
    simulator: RunningSimulator,
    control: simulator_pb2_grpc.BankSimulatorAsyncStub,
    tmp_path: Path,
) -> None:
    fast, slow = await hub_factory(), await hub_factory()
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    rounds = ("--rate", "60", "--duration", "1", "--rounds", "3")

    code_a, out_a = await txverify(*load_args(fast, simulator, *rounds, "--json", str(a)))
    for bank in simulator.nodes:  # the second hub's issuers answer 30 ms later
        faults = simulator_pb2.Faults(latency_ms=30)
        await control.SetFaults(simulator_pb2.SetFaultsRequest(bank=bank, faults=faults))
    code_b, out_b = await txverify(*load_args(slow, simulator, *rounds, "--json", str(b)))
    code, output = await txverify("load", "compare", str(a), str(b), "--json")

    assert (0, 0) == (code_a, code_b), out_a + out_b
    assert 3 == len(json.loads(a.read_text(encoding="utf-8"))["rounds"])
    assert 0 == code, output
    verdicts = {f["figure"]: f["verdict"] for f in json.loads(output)["figures"]}
    assert "B worse" == verdicts["p50"]
    worse, _ = await txverify("load", "compare", str(a), str(b), "--fail-on-worse")
    same, _ = await txverify("load", "compare", str(a), str(a), "--fail-on-worse")
    assert (3, 0) == (worse, same)
